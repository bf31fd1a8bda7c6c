/**
 * The client replica: a client's local copy of one graph, as pure logic (no
 * I/O, no clock), the port of the Rust client's `client/src/replica/`
 * (docs/protocol.md 4.3, 5, 6).
 *
 * It keeps the **server state** (the graph as of `seq`, from a `graph.sync`
 * and the events after it, plus this client's own changes once their
 * outcome says where they landed) and the **pending** mutations (made here,
 * applied optimistically, waiting for their outcome). What a user sees
 * ({@link Replica.nodes}, {@link Replica.edges}) is the server state with the
 * pending changes applied on top, in order; a rolled-back change leaves the
 * pending list, so the view is again exactly the server's.
 *
 * Text is the classic OT client: at most one mutation editing a node's text
 * is in flight per node; later ones wait, in order (and so does everything
 * after them, so the server receives this client's changes in the order
 * they were made). Each remote text operation transforms the pending ones,
 * the server's first.
 */
import * as ot from './ot.js';
import type { TextOp } from './ot.js';
import {
  edgeId, isMutationType,
  type Edge, type EdgeSet, type Envelope, type GraphSyncData, type Mutation, type Node, type NodeSet,
  type Op, type PropsPatch, type RegionEnterData, type RegionLeaveData, type RegionSyncData, type Resolution,
  type UpdateConflictResolved, type UpdateConfirmed, type UpdateRollback,
} from './types.js';

/** Why the replica could not take a message: the connection layer resyncs. */
export class ReplicaError extends Error {
  constructor(readonly kind: 'gap' | 'duplicate' | 'no_seq' | 'epoch' | 'diverged' | 'unreproducible' | 'text_mismatch' | 'not_a_mutation' | 'unexpected', message: string) {
    super(message);
  }
}

/** The graph as of some `seq`. */
export class Graph {
  nodes = new Map<string, Node>();
  edges = new Map<string, Edge>();
  /** For each node, the ids of the edges that touch it. */
  adjacency = new Map<string, Set<string>>();

  insertEdge(edge: Edge): void {
    const id = edgeId(edge);
    for (const end of [edge.source, edge.target]) {
      let s = this.adjacency.get(end);
      if (!s) this.adjacency.set(end, (s = new Set()));
      s.add(id);
    }
    this.edges.set(id, edge);
  }
  removeEdge(id: string): void {
    const edge = this.edges.get(id);
    if (!edge) return;
    this.edges.delete(id);
    for (const end of [edge.source, edge.target]) {
      const s = this.adjacency.get(end);
      if (s) { s.delete(id); if (s.size === 0) this.adjacency.delete(end); }
    }
  }
  removeNode(id: string): string[] {
    this.nodes.delete(id);
    const touching = [...(this.adjacency.get(id) ?? [])];
    for (const e of touching) this.removeEdge(e);
    return touching;
  }
  node(id: string): Node {
    const n = this.nodes.get(id);
    if (!n) throw new ReplicaError('diverged', `node \`${id}\` is not in the replica`);
    return n;
  }
  edge(id: string): Edge {
    const e = this.edges.get(id);
    if (!e) throw new ReplicaError('diverged', `edge \`${id}\` is not in the replica`);
    return e;
  }
}

function applyProps(props: Record<string, unknown> | undefined, patch: PropsPatch): Record<string, any> {
  const out: Record<string, any> = { ...(props ?? {}) };
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete out[k];
    else out[k] = v;
  }
  return out;
}

function applyNodeSet(node: Node, set: NodeSet): void {
  if (set.kind !== undefined) node.kind = set.kind;
  if (set.label !== undefined) node.label = set.label;
  if (set.content !== undefined) node.content = set.content;
  if (set.x !== undefined) node.x = set.x;
  if (set.y !== undefined) node.y = set.y;
  if (set.props !== undefined) node.props = applyProps(node.props, set.props);
}

function applyEdgeSet(edge: Edge, set: EdgeSet): void {
  if (set.confidence !== undefined) edge.confidence = set.confidence;
  if (set.rationale !== undefined) edge.rationale = set.rationale;
  if (set.bidirectional !== undefined) edge.bidirectional = set.bidirectional;
  if (set.props !== undefined) edge.props = applyProps(edge.props, set.props);
}

/** The client fields of a node create, as a set (a merged create). */
function nodeAsSet(n: Node): NodeSet {
  const { kind, label, content, x, y, props } = n;
  return strip({ kind, label, content, x, y, props });
}
function edgeAsSet(e: Edge): EdgeSet {
  const { confidence, rationale, bidirectional, props } = e;
  return strip({ confidence, rationale, bidirectional, props });
}
function strip<T extends object>(o: T): T {
  for (const k of Object.keys(o) as (keyof T)[]) if (o[k] === undefined) delete o[k];
  return o;
}

export function fillNode(n: Node): Node {
  return { kind: 'concept', label: '', content: '', x: 0, y: 0, props: {}, ...n };
}
export function fillEdge(e: Edge): Edge {
  return { confidence: 1, rationale: '', bidirectional: false, props: {}, ...e, id: edgeId(e) };
}
function touch(e: Node | Edge, seq: number, at: number, user: string): void {
  e.rev = seq;
  e.updatedAt = at;
  e.updatedBy = user;
}

/** The ops of a mutation (one for a single mutation). */
export function opsOf(body: Mutation): Op[] {
  return body.type === 'batch.update' ? body.data.ops : [body];
}

function opEdgeId(d: { id?: string; source?: string; type?: string; target?: string }): string | undefined {
  if (d.id !== undefined) return d.id;
  if (d.source !== undefined && d.type !== undefined && d.target !== undefined) return edgeId(d as Edge);
  return undefined;
}

const clone = <T>(v: T): T => structuredClone(v);

/** Applies an own confirmed op to the server state exactly as the server did. */
function applyOwn(g: Graph, op: Op, seq: number, at: number, user: string, text: TextOp | undefined): void {
  switch (op.type) {
    case 'node.create': {
      const c = op.data.node;
      const node = g.nodes.get(c.id);
      if (node) { applyNodeSet(node, nodeAsSet(c)); touch(node, seq, at, user); }
      else g.nodes.set(c.id, { ...fillNode(clone(c)), rev: seq, createdAt: at, updatedAt: at, createdBy: user, updatedBy: user });
      break;
    }
    case 'node.update': {
      const u = op.data;
      const node = g.node(u.id);
      if (u.set) applyNodeSet(node, u.set);
      const t = text ?? u.text?.content;
      if (t) {
        try { node.content = ot.apply(t, node.content ?? ''); }
        catch (e) { throw new ReplicaError('diverged', `own text edit of node \`${u.id}\`: ${(e as Error).message}`); }
      }
      touch(node, seq, at, user);
      break;
    }
    case 'node.delete': g.removeNode(op.data.id); break;
    case 'edge.create': {
      const e = op.data.edge;
      const id = edgeId(e);
      const edge = g.edges.get(id);
      if (edge) { applyEdgeSet(edge, edgeAsSet(e)); touch(edge, seq, at, user); }
      else g.insertEdge({ ...fillEdge(clone(e)), rev: seq, createdAt: at, updatedAt: at, createdBy: user, updatedBy: user });
      break;
    }
    case 'edge.update': {
      const id = opEdgeId(op.data);
      if (id === undefined) throw new ReplicaError('diverged', 'edge.update without id');
      const edge = g.edge(id);
      if (op.data.set) applyEdgeSet(edge, op.data.set);
      touch(edge, seq, at, user);
      break;
    }
    case 'edge.delete': {
      const id = opEdgeId(op.data);
      if (id !== undefined) g.removeEdge(id);
      break;
    }
  }
}

/** Takes the server's final values of conflicting fields. */
function applyResolution(g: Graph, op: Op, r: Resolution): void {
  const nodeId = op.type === 'node.create' ? op.data.node.id : op.type === 'node.update' ? op.data.id : undefined;
  const node = nodeId === undefined ? undefined : g.nodes.get(nodeId);
  if (node) {
    const { kind, label, content, x, y, props } = r;
    applyNodeSet(node, strip({ kind, label, content, x, y, props }));
    return;
  }
  const eid = op.type === 'edge.create' ? edgeId(op.data.edge) : op.type === 'edge.update' ? opEdgeId(op.data) : undefined;
  const edge = eid === undefined ? undefined : g.edges.get(eid);
  if (edge) {
    const { confidence, rationale, bidirectional, props } = r;
    applyEdgeSet(edge, strip({ confidence, rationale, bidirectional, props }));
  }
}

/** Applies a pending op to the view, best effort. */
function applyOptimistic(g: Graph, op: Op): void {
  switch (op.type) {
    case 'node.create': {
      const c = op.data.node;
      const node = g.nodes.get(c.id);
      if (node) applyNodeSet(node, nodeAsSet(clone(c)));
      else g.nodes.set(c.id, fillNode(clone(c)));
      break;
    }
    case 'node.update': {
      const node = g.nodes.get(op.data.id);
      if (!node) return;
      if (op.data.set) applyNodeSet(node, clone(op.data.set));
      const t = op.data.text?.content;
      if (t) { try { node.content = ot.apply(t, node.content ?? ''); } catch { /* shown as the server has it */ } }
      break;
    }
    case 'node.delete': g.removeNode(op.data.id); break;
    case 'edge.create': {
      const e = op.data.edge;
      const id = edgeId(e);
      const edge = g.edges.get(id);
      if (edge) applyEdgeSet(edge, edgeAsSet(clone(e)));
      else if (g.nodes.has(e.source) && g.nodes.has(e.target)) g.insertEdge(fillEdge(clone(e)));
      break;
    }
    case 'edge.update': {
      const id = opEdgeId(op.data);
      const edge = id === undefined ? undefined : g.edges.get(id);
      if (edge && op.data.set) applyEdgeSet(edge, clone(op.data.set));
      break;
    }
    case 'edge.delete': {
      const id = opEdgeId(op.data);
      if (id !== undefined) g.removeEdge(id);
      break;
    }
  }
}

type TextEffect = { k: 'edit'; op: TextOp } | { k: 'replace' } | { k: 'none' };

function textEffect(op: Op, node: string): TextEffect {
  switch (op.type) {
    case 'node.create':
      return op.data.node.id === node && op.data.node.content !== undefined ? { k: 'replace' } : { k: 'none' };
    case 'node.delete':
      return op.data.id === node ? { k: 'replace' } : { k: 'none' };
    case 'node.update': {
      if (op.data.id !== node) return { k: 'none' };
      if (op.data.set?.content !== undefined) return { k: 'replace' };
      const t = op.data.text?.content;
      return t ? { k: 'edit', op: t } : { k: 'none' };
    }
    default:
      return { k: 'none' };
  }
}

/** Nodes whose text a mutation edits, replaces, creates or deletes. */
function textNodes(body: Mutation): string[] {
  const out: string[] = [];
  for (const op of opsOf(body)) {
    if (op.type === 'node.create') out.push(op.data.node.id);
    else if (op.type === 'node.delete') out.push(op.data.id);
    else if (op.type === 'node.update' && (op.data.text !== undefined || op.data.set?.content !== undefined)) out.push(op.data.id);
  }
  return out;
}

/** Nodes whose text a mutation edits with a text operation. */
function textEditedNodes(body: Mutation): string[] {
  const out: string[] = [];
  for (const op of opsOf(body)) if (op.type === 'node.update' && op.data.text?.content) out.push(op.data.id);
  return out;
}

/** A change made here, waiting for its outcome. */
interface Pending {
  id: string;
  /** The mutation; its text operations are kept rebased on the server state as of `base`. */
  body: Mutation;
  base: number;
  sent: boolean;
  /** Its text could not be kept rebased: only the server's word on it counts. */
  broken: boolean;
}

/** What changed in the view by one message: for the client's `change` event. */
export interface Touched { nodes: Set<string>; edges: Set<string> }

class View {
  nodes = new Set<string>();
  edges = new Set<string>();
  graph = new Graph();
}

/** A read-only map over the server state with an overlay of the view on top. */
class OverlayMap<V> implements ReadonlyMap<string, V> {
  constructor(private readonly server: Map<string, V>, private readonly overlaid: Set<string>, private readonly over: Map<string, V>) {}
  get size(): number {
    let n = this.server.size;
    for (const id of this.overlaid) n += (this.over.has(id) ? 1 : 0) - (this.server.has(id) ? 1 : 0);
    return n;
  }
  get(id: string): V | undefined {
    return this.overlaid.has(id) ? this.over.get(id) : this.server.get(id);
  }
  has(id: string): boolean {
    return this.overlaid.has(id) ? this.over.has(id) : this.server.has(id);
  }
  *entries(): MapIterator<[string, V]> {
    for (const e of this.server) if (!this.overlaid.has(e[0])) yield e;
    for (const e of this.over) if (this.overlaid.has(e[0])) yield e;
  }
  *keys(): MapIterator<string> { for (const [k] of this.entries()) yield k; }
  *values(): MapIterator<V> { for (const [, v] of this.entries()) yield v; }
  [Symbol.iterator](): MapIterator<[string, V]> { return this.entries(); }
  forEach(cb: (value: V, key: string, map: ReadonlyMap<string, V>) => void, thisArg?: unknown): void {
    for (const [k, v] of this.entries()) cb.call(thisArg, v, k, this);
  }
}

/** A client's local graph: server state plus pending optimistic changes. */
export class Replica {
  epoch: string | undefined;
  seq = 0;
  userId: string | undefined;
  server = new Graph();
  private pending: Pending[] = [];
  private cachedView: View | undefined;
  private dropped: string[] = [];
  /**
   * Whether the session's regions cut the graph (it gave up the region
   * `"all"`, protocol 7): the replica holds what they hold, and events
   * come with gaps in `seq` (the changes outside them).
   */
  partial = false;

  /** How many changes wait for an outcome (sent or not). */
  get pendingCount(): number {
    return this.pending.length;
  }
  /** The ids of the pending changes, oldest first. */
  pendingIds(): string[] {
    return this.pending.map((p) => p.id);
  }
  hasPending(id: string): boolean {
    return this.pending.some((p) => p.id === id);
  }

  /** The nodes as this client sees them (server state + pending changes). */
  get nodes(): ReadonlyMap<string, Node> {
    const v = this.view();
    return new OverlayMap(this.server.nodes, v.nodes, v.graph.nodes);
  }
  /** The edges as this client sees them. */
  get edges(): ReadonlyMap<string, Edge> {
    const v = this.view();
    return new OverlayMap(this.server.edges, v.edges, v.graph.edges);
  }
  node(id: string): Node | undefined {
    const v = this.view();
    return v.nodes.has(id) ? v.graph.nodes.get(id) : this.server.nodes.get(id);
  }

  private view(): View {
    return (this.cachedView ??= this.buildView());
  }
  private invalidate(): void {
    this.cachedView = undefined;
  }

  private buildView(): View {
    const view = new View();
    for (const p of this.pending) {
      for (const op of opsOf(p.body)) {
        switch (op.type) {
          case 'node.create': view.nodes.add(op.data.node.id); break;
          case 'node.update': view.nodes.add(op.data.id); break;
          case 'node.delete':
            view.nodes.add(op.data.id);
            for (const e of this.server.adjacency.get(op.data.id) ?? []) view.edges.add(e);
            break;
          case 'edge.create':
            view.nodes.add(op.data.edge.source);
            view.nodes.add(op.data.edge.target);
            view.edges.add(edgeId(op.data.edge));
            break;
          case 'edge.update':
          case 'edge.delete': {
            const id = opEdgeId(op.data);
            if (id !== undefined) view.edges.add(id);
            break;
          }
        }
      }
    }
    for (const id of view.nodes) {
      const n = this.server.nodes.get(id);
      if (n) view.graph.nodes.set(id, clone(n));
    }
    for (const id of view.edges) {
      const e = this.server.edges.get(id);
      if (e) view.graph.insertEdge(clone(e));
    }
    for (const p of this.pending) for (const op of opsOf(p.body)) applyOptimistic(view.graph, op);
    for (const id of view.graph.edges.keys()) view.edges.add(id);
    return view;
  }

  /** The ids this client's view shows differently from the server state (nodes and edges touched by pending changes). */
  overlaid(): Touched {
    const v = this.view();
    return { nodes: new Set(v.nodes), edges: new Set(v.edges) };
  }

  /**
   * Takes a `graph.sync`: a snapshot replaces the server state, a delta
   * applies its events in order. Returns the changes that may be sent now.
   */
  applySync(sync: GraphSyncData): Envelope[] {
    const seq = sync.seq ?? 0;
    const last = !sync.chunk || sync.chunk.index + 1 >= sync.chunk.count;
    if (sync.mode === 'delta') {
      const epoch = sync.epoch ?? '';
      if (this.epoch !== epoch) throw new ReplicaError('epoch', `delta sync for epoch ${epoch} does not match the replica's epoch ${this.epoch}`);
      for (const event of sync.events ?? []) {
        if (event.seq !== undefined && event.seq <= this.seq) continue;
        this.applyEvent(event);
      }
      if (last && this.seq < seq) throw new ReplicaError('gap', `expected seq ${this.seq + 1} next, got ${seq}`);
    } else {
      this.takeSnapshot({ ...sync, seq }, !sync.chunk || sync.chunk.index === 0);
    }
    this.invalidate();
    return this.release();
  }

  /**
   * Takes a snapshot's nodes and edges, or a part of them: `fresh` for
   * the first part, which replaces what the replica held.
   */
  private takeSnapshot(sync: GraphSyncData & { seq: number }, fresh: boolean): void {
    if (fresh) {
      this.server = new Graph();
      for (const p of this.pending) if (p.base !== sync.seq || this.epoch !== sync.epoch) p.broken = true;
    }
    for (const n of sync.nodes ?? []) this.server.nodes.set(n.id, n);
    for (const e of sync.edges ?? []) this.server.insertEdge(e);
    this.epoch = sync.epoch;
    this.seq = sync.seq;
  }

  /** Applies one graph event (another session's, or an own one replayed by a delta, which settles it). */
  applyEvent(event: Envelope): Envelope[] {
    const seq = event.seq;
    if (seq === undefined) throw new ReplicaError('no_seq', 'event has no seq');
    if (seq <= this.seq) throw new ReplicaError('duplicate', `event seq ${seq} was already applied`);
    if (seq !== this.seq + 1 && !this.partial) throw new ReplicaError('gap', `expected seq ${this.seq + 1} next, got ${seq}`);
    if (!isMutationType(event.type)) throw new ReplicaError('unexpected', `\`${event.type}\` is not an event`);
    const body = { type: event.type, data: event.data ?? {} } as Mutation;
    const own = this.userId !== undefined && event.userId === this.userId && this.pending.some((p) => p.id === event.id);
    if (own) this.pending = this.pending.filter((p) => p.id !== event.id);
    for (const op of opsOf(body)) this.applyEventOp(op, !own);
    this.seq = seq;
    for (const p of this.pending) if (!p.broken) p.base = seq;
    this.invalidate();
    return this.release();
  }

  /**
   * Takes a `region.sync`, `region.enter` or `region.leave` (protocol 7)
   * and returns the ids it touched. A region's nodes and edges are added
   * to what the replica holds (regions may overlap); a leave removes the
   * node and its edges (a node still in another region of the session
   * comes back with that region's next sync: hold overlapping regions
   * apart by `regionId`). With `whole`, the sync is of the region `"all"`
   * taken again: it replaces everything, as a snapshot does (`first` for
   * its first part), and the replica is whole again; `released` are the
   * changes that may be sent now, as after a sync.
   */
  applyRegion(env: Envelope, whole = false, first = true): Touched & { released: Envelope[] } {
    const touched = { nodes: new Set<string>(), edges: new Set<string>(), released: [] as Envelope[] };
    if (env.type === 'region.sync') {
      const d = env.data as RegionSyncData;
      if (whole) {
        if (first) this.partial = false;
        return this.takeWhole(d, first);
      }
      for (const n of d.nodes ?? []) {
        this.server.nodes.set(n.id, n);
        touched.nodes.add(n.id);
      }
      for (const e of d.edges ?? []) {
        this.server.insertEdge(e);
        touched.edges.add(edgeId(e));
      }
    } else if (env.type === 'region.enter') {
      const { node } = env.data as RegionEnterData;
      this.server.nodes.set(node.id, node);
      touched.nodes.add(node.id);
    } else if (env.type === 'region.leave') {
      const { id } = env.data as RegionLeaveData;
      for (const e of this.server.removeNode(id)) touched.edges.add(e);
      touched.nodes.add(id);
    }
    this.invalidate();
    return touched;
  }

  private takeWhole(d: RegionSyncData, first: boolean): Touched & { released: Envelope[] } {
    const before = this.server;
    this.takeSnapshot({ epoch: this.epoch, seq: d.seq, nodes: d.nodes, edges: d.edges }, first);
    this.invalidate();
    const released = this.release();
    const touched = { nodes: new Set<string>(), edges: new Set<string>(), released };
    if (first) {
      for (const id of before.nodes.keys()) touched.nodes.add(id);
      for (const id of before.edges.keys()) touched.edges.add(id);
    }
    for (const n of d.nodes ?? []) touched.nodes.add(n.id);
    for (const e of d.edges ?? []) touched.edges.add(edgeId(e));
    return touched;
  }

  private applyEventOp(op: Op, rebase: boolean): void {
    // With regions, an edge is sent when one end is seen: its other end,
    // or the edge itself (whose end entered alone), may not be held.
    if (this.partial && op.type === 'node.update' && !this.server.nodes.has(op.data.id)) return;
    if (this.partial && op.type === 'edge.update' && !this.server.edges.has(opEdgeId(op.data) ?? '')) return;
    switch (op.type) {
      case 'node.create': {
        const content = op.data.node.content ?? '';
        this.server.nodes.set(op.data.node.id, clone(op.data.node));
        if (rebase && content !== '') this.rebasePending(op.data.node.id, [content], 0);
        break;
      }
      case 'node.update': {
        const u = op.data;
        const node = this.server.node(u.id);
        const before = node.content ?? '';
        if (u.set) applyNodeSet(node, clone(u.set));
        let remote: TextOp | undefined;
        const t = u.text?.content;
        if (t) {
          try { node.content = ot.apply(t, before); }
          catch (e) { throw new ReplicaError('diverged', `text of node \`${u.id}\`: ${(e as Error).message}`); }
          remote = t;
        } else if (u.set?.content !== undefined) {
          // A replaced text: the pending edits are transformed over the replacement.
          remote = new ot.OpBuilder().delete(ot.cpLen(before)).insert(u.set.content).ops;
        }
        if (u.rev !== undefined) node.rev = u.rev;
        if (u.updatedAt !== undefined) node.updatedAt = u.updatedAt;
        if (u.updatedBy !== undefined) node.updatedBy = u.updatedBy;
        if (rebase && remote) this.rebasePending(u.id, remote, 0);
        break;
      }
      case 'node.delete':
        this.server.removeNode(op.data.id);
        this.orphanText(op.data.id, 0);
        break;
      case 'edge.create':
        this.server.insertEdge({ ...clone(op.data.edge), id: edgeId(op.data.edge) });
        break;
      case 'edge.update': {
        const id = opEdgeId(op.data);
        if (id === undefined) throw new ReplicaError('diverged', 'edge.update without id');
        const edge = this.server.edge(id);
        if (op.data.set) applyEdgeSet(edge, clone(op.data.set));
        if (op.data.rev !== undefined) edge.rev = op.data.rev;
        if (op.data.updatedAt !== undefined) edge.updatedAt = op.data.updatedAt;
        if (op.data.updatedBy !== undefined) edge.updatedBy = op.data.updatedBy;
        break;
      }
      case 'edge.delete': {
        const id = opEdgeId(op.data);
        if (id !== undefined) this.server.removeEdge(id);
        break;
      }
    }
  }

  /**
   * Makes a change here: applies it at once on top of the server state and
   * keeps it pending. Returns the envelope to send now, or undefined when it
   * must wait (it then comes out of a later call's result). Text operations
   * in `body` are relative to the text as {@link Replica.node} shows it.
   */
  localMutation(id: string, body: Mutation): Envelope | undefined {
    if (!isMutationType(body.type)) throw new ReplicaError('not_a_mutation', `\`${body.type}\` is not a mutation`);
    const seen = new Set<string>();
    for (const op of opsOf(body)) {
      if (op.type !== 'node.update') continue;
      const t = op.data.text?.content;
      if (!t || seen.has(op.data.id)) continue;
      seen.add(op.data.id);
      const node = this.node(op.data.id);
      if (node) {
        const len = ot.cpLen(node.content ?? '');
        if (ot.baseLen(t) !== len) throw new ReplicaError('text_mismatch', `text operation on node \`${op.data.id}\` is for a text of ${ot.baseLen(t)} characters; the text has ${len}`);
      }
    }
    this.pending.push({ id, body: clone(body), base: this.seq, sent: false, broken: false });
    this.invalidate();
    return this.release().pop();
  }

  /** The ids of waiting changes dropped unsent since the last call (their text was deleted or replaced). */
  takeDropped(): string[] {
    const d = this.dropped;
    this.dropped = [];
    return d;
  }

  private envelope(p: Pending): Envelope {
    const body = clone(p.body);
    body.data.baseSeq = p.base;
    if (body.type === 'batch.update') for (const op of body.data.ops) delete op.data.baseSeq;
    return { id: p.id, type: body.type, data: body.data };
  }

  /** The changes sent and not yet settled: send them again after a reconnect (and after its sync). */
  sentPending(): Envelope[] {
    return this.pending.filter((p) => p.sent).map((p) => this.envelope(p));
  }

  /**
   * Takes the outcome of one of this client's changes. Returns the changes
   * that may be sent now. An outcome for a change no longer held is ignored.
   */
  settle(outcome: Envelope): Envelope[] {
    const d = outcome.data as UpdateConfirmed & Partial<UpdateConflictResolved> & Partial<UpdateRollback>;
    if (!['update.confirmed', 'update.conflict_resolved', 'update.rollback'].includes(outcome.type)) {
      throw new ReplicaError('unexpected', `\`${outcome.type}\` is not an outcome`);
    }
    const index = this.pending.findIndex((p) => p.id === d.ref);
    if (index < 0) return this.release();
    if (outcome.type === 'update.rollback') {
      const [p] = this.pending.splice(index, 1);
      this.undoUnder(p!.body, index);
    } else if (d.seq <= this.seq) {
      this.pending.splice(index, 1);
    } else if (d.seq !== this.seq + 1 && !this.partial) {
      throw new ReplicaError('gap', `expected seq ${this.seq + 1} next, got ${d.seq}`);
    } else {
      const [p] = this.pending.splice(index, 1) as [Pending];
      const at = outcome.timestamp ?? 0;
      const user = outcome.userId ?? this.userId ?? '';
      const serverText = d.text?.content;
      const isBatch = p.body.type === 'batch.update';
      if (p.broken && isBatch && textEditedNodes(p.body).length > 0) {
        this.invalidate();
        throw new ReplicaError('unreproducible', `the result of own change ${p.id} cannot be reproduced locally; resync`);
      }
      const resolution = outcome.type === 'update.conflict_resolved' ? d.resolution : undefined;
      opsOf(p.body).forEach((op, i) => {
        applyOwn(this.server, op, d.seq, at, user, isBatch ? undefined : serverText);
        if (resolution) {
          const r = isBatch ? resolution.ops?.find((o) => o.index === i)?.resolution : resolution;
          if (r) applyResolution(this.server, op, r);
        }
      });
      this.seq = d.seq;
      for (const q of this.pending) if (!q.broken) q.base = d.seq;
      for (const op of opsOf(p.body)) if (op.type === 'node.delete') this.orphanText(op.data.id, 0);
    }
    this.invalidate();
    return this.release();
  }

  /** Hands out the waiting changes that may go now (see the class comment). */
  private release(): Envelope[] {
    const out: Envelope[] = [];
    let k = 0;
    while (k < this.pending.length) {
      const p = this.pending[k]!;
      if (p.sent) { k++; continue; }
      const edited = textEditedNodes(p.body);
      const blocked = this.pending.slice(0, k).some((e) => e.sent && textNodes(e.body).some((n) => edited.includes(n)));
      if (blocked) break;
      if (edited.length > 0 && (p.broken || !this.textFits(p.body))) {
        this.pending.splice(k, 1);
        this.undoUnder(p.body, k);
        this.dropped.push(p.id);
        continue;
      }
      p.sent = true;
      p.base = this.seq;
      out.push(this.envelope(p));
      k++;
    }
    if (this.dropped.length > 0) this.invalidate();
    return out;
  }

  private textFits(body: Mutation): boolean {
    const seen = new Set<string>();
    for (const op of opsOf(body)) {
      if (op.type === 'node.update') {
        const t = op.data.text?.content;
        const replaces = op.data.set?.content !== undefined;
        if (t && !seen.has(op.data.id)) {
          const node = this.server.nodes.get(op.data.id);
          if (node && ot.baseLen(t) !== ot.cpLen(node.content ?? '')) return false;
        }
        if (t || replaces) seen.add(op.data.id);
      } else if (op.type === 'node.create') seen.add(op.data.node.id);
      else if (op.type === 'node.delete') seen.add(op.data.id);
    }
    return true;
  }

  private orphanText(node: string, from: number): void {
    for (const p of this.pending.slice(from)) if (textEditedNodes(p.body).includes(node)) p.broken = true;
  }

  /** Transforms the pending text operations on `node` (from index `from`) over `r`, which came first. */
  private rebasePending(node: string, r: TextOp, from: number): void {
    pending: for (const p of this.pending.slice(from)) {
      if (p.broken) continue;
      for (const op of opsOf(p.body)) {
        const eff = textEffect(op, node);
        if (eff.k === 'none') continue;
        if (eff.k === 'replace') break pending;
        try {
          const [r2, mine] = ot.transformPair(r, eff.op);
          (op as { type: 'node.update'; data: { text: { content: TextOp } } }).data.text.content = mine;
          r = r2;
        } catch {
          p.broken = true;
          break pending;
        }
      }
    }
  }

  /** Undoes a removed pending change under the ones queued after it (from `index`). */
  private undoUnder(body: Mutation, index: number): void {
    for (const node of textNodes(body)) {
      const inverse = this.undoText(body, node);
      if (inverse) this.rebasePending(node, inverse, index);
      else this.orphanText(node, index);
    }
  }

  private undoText(body: Mutation, node: string): TextOp | undefined {
    const n = this.server.nodes.get(node);
    if (!n) return undefined;
    const before = n.content ?? '';
    let forward: TextOp | undefined;
    try {
      for (const op of opsOf(body)) {
        const eff = textEffect(op, node);
        if (eff.k === 'replace') return undefined;
        if (eff.k === 'edit') forward = forward ? ot.compose(forward, eff.op) : eff.op;
      }
      if (!forward) return undefined;
      ot.apply(forward, before);
      return ot.invert(forward, before);
    } catch {
      return undefined;
    }
  }
}
