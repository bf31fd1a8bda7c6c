/**
 * The Gitmind live client: one graph, kept in sync over a WebSocket, with
 * optimistic changes, OT for `content`, presence, heartbeats and reconnect
 * with resume. The port of the Rust client (`client/src/client.rs`).
 */
import { DEFAULT_BACKOFF, backoffDelay, type Backoff } from './backoff.js';
import { FrameError, JSON_SUBPROTOCOL, decodeJson, encodeJson } from './codec-json.js';
import * as ot from './ot.js';
import { Replica, ReplicaError, opsOf } from './replica.js';
import {
  edgeId, isMutationType,
  type CursorData, type Edge, type EdgeSet, type Envelope, type GraphSyncData, type Mutation, type Node,
  type GonzaiDiscoverData, type NodeSet, type Op, type PresenceData, type Query, type QueryResultsData, type RegionFilter,
  type SelectionData, type SystemError, type SystemReconnect, type UpdateConfirmed, type UpdateConflictResolved, type UpdateRollback,
} from './types.js';

/** A frame codec: the JSON one is built in, the binary one loaded on demand. */
export interface Codec {
  subprotocol: string;
  encode(envelopes: Envelope[]): string | Uint8Array;
  /** Decodes one incoming frame (text or binary; either may come, 1.2). */
  decode(frame: string | ArrayBuffer | Uint8Array, onBad?: (why: string) => void): Envelope[];
}

export interface ClientOptions {
  /** The server, e.g. `ws://127.0.0.1:7432` (a trailing `/` is fine). */
  url: string;
  graph: string;
  /** The user to act as in local mode (`?user=`); ignored by a server with authentication. */
  user?: string;
  /** Asked before every connection; its token goes in `access_token` (1.1, 1.5). */
  token?: () => string | undefined | Promise<string | undefined>;
  /** `json` (default) or `binary` (FlatBuffers + zstd, loaded on demand). */
  codec?: 'json' | 'binary';
  /** A WebSocket class (for Node 20: the `ws` package); default `globalThis.WebSocket`. */
  WebSocket?: unknown;
  /** Reconnect delays (default: 250 ms × 2^attempt, full jitter, capped at 30 s). */
  backoff?: Backoff;
  /** `clientVersion` sent in each envelope's metadata? Off by default (it costs bytes). */
  clientVersion?: string;
  /** The least time between two `cursor.move` sent, ms (default 33: the server relays 30 a second). */
  cursorIntervalMs?: number;
  /** The server's frame limit (1 MiB): a change larger than that is rolled back here as `too_large`, not sent. */
  maxFrameBytes?: number;
  /**
   * A change refused `unavailable` or `rate_limited` (transient: the server
   * does not remember those, 4.4) is sent again with its id after the
   * server's `retryAfterMs` plus the backoff's jitter, up to this many
   * times (default 5), before the refusal reaches the caller.
   */
  transientRetries?: number;
}

export type ConnectionKind = 'connecting' | 'connected' | 'reconnecting' | 'offline';

export interface ClientState {
  kind: ConnectionKind;
  /** When `reconnecting`: when the next attempt starts, ms since the epoch. */
  retryAt?: number;
  /** Changes waiting for their outcome (sent or not). */
  pending: number;
  /** Why the connection was lost, when it was. */
  reason?: string;
  /** The graph `seq` this client's server state is at. */
  seq: number;
}

/** Another session on the graph (section 8). */
export interface Peer {
  sessionId: string;
  userId: string;
  status: string;
  focus?: string;
  displayName?: string;
  color?: string;
  chaosAffinity?: number;
  cursor?: CursorData;
  /** Selected node ids. */
  selection?: string[];
  /** Selected edge ids. */
  selectionEdges?: string[];
}

/**
 * How a change ended. Outcome promises **resolve** on every answer, a
 * rollback included (`kind: 'rolledback'`); they reject only when the
 * client is closed before the answer ({@link ClientClosedError}) or when the
 * change is refused before it is sent (a text edit for the wrong length,
 * which `editContent` never makes).
 */
export type Outcome =
  | { kind: 'confirmed'; ref: string; data: UpdateConfirmed }
  | { kind: 'resolved'; ref: string; data: UpdateConflictResolved }
  | { kind: 'rolledback'; ref: string; data: UpdateRollback }
  /** `editContent` with the text it already has: nothing was sent. */
  | { kind: 'unchanged'; ref: '' };

export class ClientClosedError extends Error {}

export interface ChangeEvent {
  /** Ids of the nodes whose view may have changed (created, updated, deleted). */
  nodes: string[];
  /** Ids of the edges whose view may have changed. */
  edges: string[];
  /** Who made it (this client's user for local changes). */
  userId?: string;
  sessionId?: string;
  /** Made here (an optimistic change, its rollback or its settlement), or received. */
  local: boolean;
  /** The mutation's id. */
  ref?: string;
  /** The graph `seq` of a received change. */
  seq?: number;
  /** A region's message brought it (protocol 7): not a change made by anyone now when `sync`. */
  region?: 'sync' | 'enter' | 'leave';
}

export interface RollbackEvent { ref: string; code: string; message?: string; data: UpdateRollback }
export interface PresenceEvent { sessionId: string; peer?: Peer; type: 'user.presence' | 'cursor.move' | 'selection.change' | 'sync' }
export interface SyncedEvent { mode: 'snapshot' | 'delta'; seq: number; epoch?: string }

export interface ClientEvents {
  state: ClientState;
  synced: SyncedEvent;
  change: ChangeEvent;
  presence: PresenceEvent;
  rollback: RollbackEvent;
  error: SystemError;
  discover: GonzaiDiscoverData;
  /** A live query's results, at once and whenever they change (protocol 7). */
  query: QueryResultsData;
  /** Every envelope received, after the client took it (for sections 7 and 9, and debugging). */
  message: Envelope;
}

type Listener<T> = (value: T) => void;

interface WsLike {
  readyState: number;
  binaryType: string;
  protocol: string;
  send(data: string | Uint8Array): void;
  close(code?: number, reason?: string): void;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
}
type WsClass = new (url: string, protocols?: string | string[]) => WsLike;

const jsonCodec: Codec = {
  subprotocol: JSON_SUBPROTOCOL,
  encode: encodeJson,
  decode(frame, onBad) {
    if (typeof frame !== 'string') throw new FrameError('a binary frame on a JSON session, and no binary codec loaded');
    return decodeJson(frame, onBad);
  },
};

function randomTag(): string {
  const b = new Uint8Array(6);
  globalThis.crypto.getRandomValues(b);
  return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
}

/** Node ids and edge ids a mutation touches (for `change` events). */
function touched(body: Mutation, edgesOf: (node: string) => Iterable<string>): { nodes: string[]; edges: string[] } {
  const nodes = new Set<string>();
  const edges = new Set<string>();
  for (const op of opsOf(body)) {
    switch (op.type) {
      case 'node.create': nodes.add(op.data.node.id); break;
      case 'node.update': nodes.add(op.data.id); break;
      case 'node.delete':
        nodes.add(op.data.id);
        for (const e of edgesOf(op.data.id)) edges.add(e);
        break;
      case 'edge.create': edges.add(edgeId(op.data.edge)); break;
      default: {
        const d = op.data as { id?: string; source?: string; type?: string; target?: string };
        const id = d.id ?? (d.source !== undefined ? edgeId(d as Edge) : undefined);
        if (id !== undefined) edges.add(id);
      }
    }
  }
  return { nodes: [...nodes], edges: [...edges] };
}

export class GitmindClient {
  readonly options: Readonly<ClientOptions>;
  /** This session's id and user, from the server's latest `graph.sync`. */
  sessionId: string | undefined;
  userId: string | undefined;
  /** The heartbeat interval the server announced. */
  heartbeatMs = 25_000;

  private readonly replica = new Replica();
  private readonly peers = new Map<string, Peer>();
  private readonly listeners = new Map<keyof ClientEvents, Set<Listener<any>>>();
  private readonly replies = new Map<string, { resolve: (o: Outcome) => void; reject: (e: Error) => void }>();
  /** Envelopes sent and not answered, by id: resent after a reconnect even when a delta already settled them. */
  private readonly sent = new Map<string, Envelope>();
  private readonly tag = randomTag();
  private nextId = 0;
  private codec: Codec = jsonCodec;
  private codecReady: Promise<void> | undefined;
  private ws: WsLike | undefined;
  /** The connection's first sync is complete: what is made now may be sent at once. */
  private live = false;
  private running = false;
  /** An `open()` is on its way (asking for the token, loading the codec). */
  private opening = false;
  private attempt = 0;
  private serverAskedMs = 0;
  private snapshotNext = false;
  private syncing = false;
  private retryTimer: ReturnType<typeof setTimeout> | undefined;
  private heartbeatTimer: ReturnType<typeof setInterval> | undefined;
  private lastSent = 0;
  private lastReceived = 0;
  private closedWaiters: (() => void)[] = [];
  private ownPresence: PresenceData | undefined;
  private ownSelection: SelectionData | undefined;
  /**
   * The regions and queries taken, by `r:` or `q:` and their id, in the
   * order taken, sent again after each reconnect (a new connection starts
   * with the region "all" only); the region "all" given up is kept as its
   * unsubscribe.
   */
  private readonly subscriptions = new Map<string, Envelope>();
  /** The region "all" was taken again: its next `region.sync` replaces the replica. */
  private wholeNext = false;
  /** Transient refusals retried, by mutation id: how many times so far. */
  private readonly retried = new Map<string, number>();
  private cursorDue: CursorData | undefined;
  private cursorTimer: ReturnType<typeof setTimeout> | undefined;
  private lastCursorAt = 0;
  private connState: ClientState = { kind: 'offline', pending: 0, seq: 0 };

  constructor(options: ClientOptions) {
    this.options = { ...options };
  }

  // ----- reading -----

  /** The connection state, for an indicator. */
  get state(): ClientState {
    return this.connState;
  }
  /** Every node as this client sees it: the server state with the pending changes on top. */
  get nodes(): ReadonlyMap<string, Node> {
    return this.replica.nodes;
  }
  get edges(): ReadonlyMap<string, Edge> {
    return this.replica.edges;
  }
  /** The other sessions of the graph, by session id. */
  get presence(): ReadonlyMap<string, Peer> {
    return this.peers;
  }
  /** The graph's `seq` and epoch as this client has them (the resume point). */
  get seq(): number {
    return this.replica.seq;
  }
  get epoch(): string | undefined {
    return this.replica.epoch;
  }
  /** The nodes and edges as the server has them (no pending change). */
  get serverNodes(): ReadonlyMap<string, Node> {
    return this.replica.server.nodes;
  }
  get serverEdges(): ReadonlyMap<string, Edge> {
    return this.replica.server.edges;
  }

  on<K extends keyof ClientEvents>(event: K, listener: Listener<ClientEvents[K]>): this {
    let s = this.listeners.get(event);
    if (!s) this.listeners.set(event, (s = new Set()));
    s.add(listener);
    return this;
  }
  off<K extends keyof ClientEvents>(event: K, listener: Listener<ClientEvents[K]>): this {
    this.listeners.get(event)?.delete(listener);
    return this;
  }
  private emit<K extends keyof ClientEvents>(event: K, value: ClientEvents[K]): void {
    for (const l of [...(this.listeners.get(event) ?? [])]) {
      try {
        l(value);
      } catch (e) {
        // A listener's failure is its own; the client goes on.
        const report = (globalThis as { reportError?: (e: unknown) => void }).reportError ?? console.error;
        report(e);
      }
    }
  }
  private setState(kind: ConnectionKind, extra: Partial<ClientState> = {}): void {
    this.connState = { kind, pending: this.replica.pendingCount, seq: this.replica.seq, ...extra };
    this.emit('state', this.connState);
  }
  private refreshPending(): void {
    const s = this.connState;
    if (s.pending !== this.replica.pendingCount || s.seq !== this.replica.seq) {
      this.connState = { ...s, pending: this.replica.pendingCount, seq: this.replica.seq };
      this.emit('state', this.connState);
    }
  }

  // ----- connecting -----

  /** Starts connecting (and reconnecting whenever the connection is lost) until {@link close}. */
  connect(): void {
    if (this.running) return;
    this.running = true;
    const g = globalThis as { addEventListener?: (t: string, f: () => void) => void };
    g.addEventListener?.('online', this.onOnline);
    g.addEventListener?.('offline', this.onOffline);
    this.setState('connecting');
    void this.open();
  }

  /** Closes the connection with 1000 and stops reconnecting; unanswered outcomes reject with {@link ClientClosedError}. */
  close(): Promise<void> {
    this.running = false;
    const g = globalThis as { removeEventListener?: (t: string, f: () => void) => void };
    g.removeEventListener?.('online', this.onOnline);
    g.removeEventListener?.('offline', this.onOffline);
    clearTimeout(this.retryTimer);
    clearTimeout(this.cursorTimer);
    this.stopHeartbeat();
    const ws = this.ws;
    const done = new Promise<void>((resolve) => {
      if (!ws || ws.readyState >= 2) resolve();
      else {
        this.closedWaiters.push(resolve);
        setTimeout(resolve, 3000);
      }
    });
    if (ws && ws.readyState < 2) ws.close(1000, 'bye');
    this.live = false;
    for (const [, r] of this.replies) r.reject(new ClientClosedError('the client was closed before the answer'));
    this.replies.clear();
    this.setState('offline', { reason: 'closed by the program' });
    return done;
  }

  private async loadCodec(): Promise<void> {
    if (this.options.codec !== 'binary') return;
    this.codecReady ??= import('./codec-binary.js').then(async (m) => {
      this.codec = await m.binaryCodec();
    });
    await this.codecReady;
  }

  private async url(): Promise<string> {
    const q = new URLSearchParams();
    if (this.options.user !== undefined) q.set('user', this.options.user);
    if (this.replica.epoch !== undefined && !this.snapshotNext) {
      q.set('since', String(this.replica.seq));
      q.set('epoch', this.replica.epoch);
    }
    const token = await this.options.token?.();
    if (token) q.set('access_token', token);
    const base = this.options.url.replace(/\/+$/, '');
    const qs = q.toString();
    return `${base}/v1/graphs/${encodeURIComponent(this.options.graph)}${qs ? `?${qs}` : ''}`;
  }

  private async open(): Promise<void> {
    if (this.opening || this.ws) return;
    this.opening = true;
    clearTimeout(this.retryTimer);
    let ws: WsLike;
    try {
      await this.loadCodec();
      const url = await this.url();
      if (!this.running) return;
      const Ws = (this.options.WebSocket ?? (globalThis as { WebSocket?: unknown }).WebSocket) as WsClass | undefined;
      if (!Ws) throw new Error('no WebSocket: pass options.WebSocket (e.g. the `ws` package in Node 20)');
      ws = new Ws(url, [this.codec.subprotocol]);
    } catch (e) {
      this.lost(`could not connect: ${(e as Error).message}`);
      return;
    } finally {
      this.opening = false;
    }
    this.ws = ws;
    ws.binaryType = 'arraybuffer';
    this.live = false;
    this.syncing = false;
    this.lastReceived = Date.now();
    ws.onmessage = (ev) => {
      if (this.ws !== ws) return;
      this.lastReceived = Date.now();
      this.receive(ev.data);
    };
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      this.ws = undefined;
      for (const w of this.closedWaiters.splice(0)) w();
      this.lost(`closed with ${ev.code}${ev.reason ? ` (${ev.reason})` : ''}`);
    };
    ws.onerror = () => {
      // A close event follows; that is where the client reconnects.
    };
    this.startHeartbeat();
  }

  /** The browser is back online: try now rather than at the end of the backoff. */
  private readonly onOnline = (): void => {
    if (!this.running || this.ws || this.opening) return;
    this.attempt = 0;
    clearTimeout(this.retryTimer);
    void this.open();
  };
  private readonly onOffline = (): void => {
    if (this.running && !this.live) this.setState('offline', { reason: 'the browser is offline', retryAt: this.connState.retryAt });
  };
  private browserOffline(): boolean {
    const nav = (globalThis as { navigator?: { onLine?: boolean } }).navigator;
    return nav?.onLine === false;
  }

  /** The connection is gone: schedule the next attempt. */
  private lost(reason: string): void {
    this.live = false;
    this.stopHeartbeat();
    if (!this.running) return;
    const delay = backoffDelay(this.options.backoff ?? DEFAULT_BACKOFF, this.attempt, this.serverAskedMs);
    this.serverAskedMs = 0;
    this.attempt++;
    const retryAt = Date.now() + delay;
    // Offline browsers still retry (cheaply), but say so rather than "reconnecting".
    if (this.browserOffline()) this.setState('offline', { retryAt, reason: 'the browser is offline' });
    else this.setState('reconnecting', { retryAt, reason });
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => {
      if (!this.running) return;
      void this.open();
    }, delay);
  }

  /** Drops the connection now and reconnects (resuming): for tests and a page's "retry now". */
  reconnect(reason = 'asked by the program'): void {
    const ws = this.ws;
    if (ws) {
      this.ws = undefined;
      try { ws.close(1000, 'reconnecting'); } catch { /* gone already */ }
      this.lost(reason);
    } else if (this.running && !this.opening) {
      void this.open();
    }
  }

  private startHeartbeat(): void {
    this.stopHeartbeat();
    const tick = Math.max(250, Math.min(this.heartbeatMs / 4, 5000));
    this.heartbeatTimer = setInterval(() => {
      const now = Date.now();
      if (now - this.lastReceived > 2 * this.heartbeatMs + 5000) {
        const ws = this.ws;
        this.ws = undefined;
        try { ws?.close(4000, 'silent'); } catch { /* gone */ }
        this.lost('the server stopped answering');
        return;
      }
      if (this.live && now - this.lastSent >= this.heartbeatMs / 2) this.send([{ id: this.newId('h'), type: 'system.heartbeat', data: {} }]);
    }, tick);
    (this.heartbeatTimer as { unref?: () => void }).unref?.();
  }
  private stopHeartbeat(): void {
    clearInterval(this.heartbeatTimer);
    this.heartbeatTimer = undefined;
  }

  private send(envelopes: Envelope[]): void {
    const ws = this.ws;
    if (!ws || ws.readyState !== 1 || envelopes.length === 0) return;
    if (this.options.clientVersion) for (const e of envelopes) e.metadata = { clientVersion: this.options.clientVersion };
    const limit = this.options.maxFrameBytes ?? 1 << 20;
    // One frame per 1,000 envelopes at most (10.2).
    for (let i = 0; i < envelopes.length; i += 1000) {
      const part = envelopes.slice(i, i + 1000);
      const frame = this.encodeWithin(part, limit);
      if (frame !== undefined) ws.send(frame);
      else {
        // Too large together, or one of them cannot be encoded: one frame each, and a
        // change that cannot go at all is settled here (else every reconnect would resend it).
        for (const e of part) {
          const one = this.encodeWithin([e], limit);
          if (one !== undefined) ws.send(one);
          else this.refuseLocally(e, limit);
        }
      }
    }
    this.lastSent = Date.now();
  }
  private encodeWithin(envelopes: Envelope[], limit: number): string | Uint8Array | undefined {
    try {
      const frame = this.codec.encode(envelopes);
      // A JSON frame's UTF-8 length is at most 3 bytes per UTF-16 unit; measure only when that may pass the limit.
      const size = typeof frame === 'string' ? (frame.length * 3 <= limit ? frame.length : new TextEncoder().encode(frame).length) : frame.length;
      return size <= limit ? frame : undefined;
    } catch {
      return undefined;
    }
  }
  private refuseLocally(e: Envelope, limit: number): void {
    if (e.id === undefined || !isMutationType(e.type)) {
      this.emit('error', { code: 'invalid', message: `a ${e.type} that cannot be sent (not encodable, or over ${limit} bytes)`, ref: e.id });
      return;
    }
    let reason = 'invalid';
    let message = 'the change cannot be encoded (a number that is not finite, or a value of the wrong type)';
    try {
      this.codec.encode([e]);
      reason = 'too_large';
      message = `the change is larger than the frame limit (${limit} bytes): split it`;
    } catch { /* invalid */ }
    const ref = e.id;
    queueMicrotask(() => {
      this.takeOutcome({ type: 'update.rollback', data: { ref, reason, message } });
      this.refreshPending();
    });
  }
  /** Sends the changes the replica released, remembering them for a resend. */
  private sendReleased(envelopes: Envelope[]): void {
    for (const e of envelopes) if (e.id !== undefined && this.replies.has(e.id)) this.sent.set(e.id, e);
    if (this.live) this.send(envelopes);
  }

  // ----- receiving -----

  private receive(frame: unknown): void {
    let envelopes: Envelope[];
    const onBad = (why: string) => this.emit('error', { code: 'bad_frame', message: `from the server: ${why}` });
    try {
      const f = frame instanceof ArrayBuffer || ArrayBuffer.isView(frame) ? (ArrayBuffer.isView(frame) ? new Uint8Array(frame.buffer, frame.byteOffset, frame.byteLength) : frame) : String(frame);
      envelopes = this.codec.decode(f as string | ArrayBuffer | Uint8Array, onBad);
    } catch (e) {
      onBad((e as Error).message);
      return;
    }
    for (const env of envelopes) {
      try {
        this.take(env);
      } catch (e) {
        if (e instanceof ReplicaError) this.resync(e);
        else onBad(`${env.type}: ${(e as Error).message}`);
      }
      this.emit('message', env);
    }
    this.refreshPending();
  }

  /** The replica cannot take what came: ask for a sync (a snapshot when the state itself is in doubt). */
  private resync(e: ReplicaError): void {
    const snapshot = e.kind !== 'gap' && e.kind !== 'duplicate';
    if (!this.live) {
      // During the first sync: reconnect for a snapshot.
      this.snapshotNext = true;
      const ws = this.ws;
      this.ws = undefined;
      try { ws?.close(1000, 'resync'); } catch { /* gone */ }
      this.lost(`sync did not apply (${e.message}); taking a snapshot`);
      return;
    }
    if (this.syncing) return;
    this.syncing = true;
    const data: GraphSyncData = snapshot || this.replica.epoch === undefined ? {} : { since: this.replica.seq, epoch: this.replica.epoch };
    this.send([{ id: `sync-${this.tag}-${++this.nextId}`, type: 'graph.sync', data }]);
  }

  private take(env: Envelope): void {
    const type = env.type;
    if (type === 'graph.sync') return this.takeSync(env);
    if (type === 'update.confirmed' || type === 'update.conflict_resolved' || type === 'update.rollback') return this.takeOutcome(env);
    if (isMutationType(type)) {
      const body = { type, data: env.data ?? {} } as Mutation;
      const t = touched(body, (n) => this.replica.server.adjacency.get(n) ?? []);
      const released = this.replica.applyEvent(env);
      this.sendReleased(released);
      this.resolveDropped();
      this.emit('change', { ...t, userId: env.userId, sessionId: env.sessionId, local: false, ref: env.id, seq: env.seq });
      return;
    }
    switch (type) {
      case 'user.presence':
      case 'cursor.move':
      case 'selection.change':
        return this.takePresence(env);
      case 'system.error': {
        const err = (env.data ?? {}) as SystemError;
        if (err.code === 'rate_limited' && err.ref?.startsWith('sync-')) {
          this.syncing = false;
          setTimeout(() => this.resync(new ReplicaError('gap', 'retry')), err.retryAfterMs ?? 1000);
        }
        this.emit('error', err);
        return;
      }
      case 'system.reconnect':
        this.serverAskedMs = ((env.data ?? {}) as SystemReconnect).retryAfterMs ?? 0;
        return;
      case 'system.heartbeat':
        return;
      case 'gonzai.discover':
        this.emit('discover', env.data as GonzaiDiscoverData);
        return;
      case 'region.sync':
      case 'region.enter':
      case 'region.leave': {
        // The region "all" is the whole graph: its sync replaces the
        // replica when "all" was taken again, and is added to it after.
        const all = type === 'region.sync' && (env.data as { regionId?: string })?.regionId === 'all';
        const first = all && this.wholeNext;
        if (first) this.wholeNext = false;
        const t = this.replica.applyRegion(env, all && (first || !this.replica.partial), first);
        this.sendReleased(t.released);
        this.resolveDropped();
        const region = type.slice('region.'.length) as 'sync' | 'enter' | 'leave';
        this.emit('change', { nodes: [...t.nodes], edges: [...t.edges], local: false, region });
        return;
      }
      case 'query.results':
        this.emit('query', env.data as QueryResultsData);
        return;
      default:
        return; // Sections 7 and 9: seen through the `message` event.
    }
  }

  private takeSync(env: Envelope): void {
    const sync = (env.data ?? {}) as GraphSyncData;
    const first = !sync.chunk || sync.chunk.index === 0;
    const last = !sync.chunk || sync.chunk.index + 1 >= sync.chunk.count;
    if (first) {
      if (env.userId !== undefined) this.userId = env.userId;
      if (env.sessionId !== undefined) this.sessionId = env.sessionId;
      if (this.userId !== undefined) this.replica.userId = this.userId;
      if (sync.heartbeatMs) this.heartbeatMs = sync.heartbeatMs;
      this.peers.clear();
    }
    for (const p of sync.presence ?? []) {
      this.peers.set(p.sessionId, {
        sessionId: p.sessionId, userId: p.userId, ...p.presence,
        cursor: p.cursor, selection: p.selection?.nodes, selectionEdges: p.selection?.edges,
      });
    }
    const before = this.replica.seq;
    const released = this.replica.applySync(sync);
    const wasLive = this.live;
    if (wasLive) this.sendReleased(released);
    this.resolveDropped();
    if (sync.mode === 'delta') {
      for (const e of sync.events ?? []) {
        if (e.seq === undefined || e.seq <= before || !isMutationType(e.type)) continue;
        const t = touched({ type: e.type, data: e.data ?? {} } as Mutation, () => []);
        this.emit('change', { ...t, userId: e.userId, sessionId: e.sessionId, local: e.userId === this.userId, ref: e.id, seq: e.seq });
      }
    }
    if (first) this.emit('presence', { sessionId: '', type: 'sync' });
    if (!last) return;
    this.syncing = false;
    if (!wasLive) {
      // The connection's first sync: resend what waits for an answer, then go live.
      this.snapshotNext = false;
      const resend = this.replica.sentPending();
      const again = new Set(resend.map((e) => e.id));
      for (const [id, e] of this.sent) if (!again.has(id)) resend.push(e);
      for (const e of resend) if (e.id !== undefined && this.replies.has(e.id)) this.sent.set(e.id, e);
      this.live = true;
      this.attempt = 0;
      this.send(resend);
      if (this.ownPresence) this.send([{ id: this.newId('p'), type: 'user.presence', data: this.ownPresence }]);
      if (this.ownSelection) this.send([{ id: this.newId('s'), type: 'selection.change', data: this.ownSelection }]);
      this.send([...this.subscriptions.values()]);
      this.replica.partial = this.cutsGraph();
    }
    this.setState('connected');
    this.emit('synced', { mode: sync.mode ?? 'snapshot', seq: this.replica.seq, epoch: this.replica.epoch });
  }

  private takeOutcome(env: Envelope): void {
    if (this.retryLater(env)) return;
    const d = (env.data ?? {}) as UpdateRollback & UpdateConfirmed;
    const held = this.replica.hasPending(d.ref);
    // What the outcome touches, read before the replica forgets the change.
    const body = held ? this.pendingBody(d.ref) : undefined;
    let released: Envelope[];
    try {
      released = this.replica.settle(env);
    } finally {
      // Answered either way: when the replica cannot reproduce the change, it resyncs, but
      // the caller still learns the outcome now.
      this.resolve(env);
    }
    this.sendReleased(released);
    const t = body ? touched(body, (n) => this.replica.server.adjacency.get(n) ?? []) : undefined;
    this.resolveDropped();
    if (env.type === 'update.rollback') {
      this.emit('rollback', { ref: d.ref, code: d.reason, message: d.message, data: d });
    }
    if (t && (env.type !== 'update.confirmed')) this.emit('change', { ...t, userId: this.userId, sessionId: this.sessionId, local: true, ref: d.ref, seq: env.seq });
  }

  private pendingBody(ref: string): Mutation | undefined {
    return this.bodies.get(ref);
  }
  /** The bodies of the changes made here and not answered, for `change` events. */
  private readonly bodies = new Map<string, Mutation>();

  /**
   * Whether an outcome is a transient refusal of a change sent here, and
   * the change goes again later (`transientRetries`): it stays pending.
   */
  private retryLater(env: Envelope): boolean {
    const d = (env.data ?? {}) as UpdateRollback;
    if (env.type !== 'update.rollback' || (d.reason !== 'unavailable' && d.reason !== 'rate_limited') || !this.sent.has(d.ref)) return false;
    const tries = this.retried.get(d.ref) ?? 0;
    if (tries >= (this.options.transientRetries ?? 5)) return false;
    this.retried.set(d.ref, tries + 1);
    const ws = this.ws;
    const delay = backoffDelay(this.options.backoff ?? DEFAULT_BACKOFF, tries, d.retryAfterMs ?? 0);
    setTimeout(() => {
      // A new connection has sent every pending change again already.
      const e = this.sent.get(d.ref);
      if (e && this.ws === ws && this.live) this.send([e]);
    }, delay);
    return true;
  }

  private resolve(env: Envelope): void {
    const d = (env.data ?? {}) as { ref: string };
    this.sent.delete(d.ref);
    this.retried.delete(d.ref);
    this.bodies.delete(d.ref);
    const r = this.replies.get(d.ref);
    if (!r) return;
    this.replies.delete(d.ref);
    const kind = env.type === 'update.confirmed' ? 'confirmed' : env.type === 'update.conflict_resolved' ? 'resolved' : 'rolledback';
    r.resolve({ kind, ref: d.ref, data: env.data } as Outcome);
  }

  private resolveDropped(): void {
    for (const id of this.replica.takeDropped()) {
      const body = this.bodies.get(id);
      const data: UpdateRollback = { ref: id, reason: 'deleted', message: 'the text this edit was made on was deleted or replaced before it could be sent' };
      this.resolve({ type: 'update.rollback', data });
      this.emit('rollback', { ref: id, code: 'deleted', message: data.message, data });
      if (body) this.emit('change', { ...touched(body, () => []), userId: this.userId, local: true, ref: id });
    }
  }

  private takePresence(env: Envelope): void {
    const sid = env.sessionId;
    if (sid === undefined || sid === this.sessionId) return;
    let peer = this.peers.get(sid);
    if (env.type === 'user.presence') {
      const p = (env.data ?? {}) as PresenceData;
      if (p.status === 'left') {
        this.peers.delete(sid);
        this.emit('presence', { sessionId: sid, type: 'user.presence' });
        return;
      }
      const keep = peer ? { cursor: peer.cursor, selection: peer.selection, selectionEdges: peer.selectionEdges } : {};
      // `joined` carries only the status; a later presence replaces the whole of it (8).
      peer = { sessionId: sid, userId: env.userId ?? peer?.userId ?? '', ...keep, ...p, status: p.status === 'joined' ? 'active' : p.status };
    } else {
      peer ??= { sessionId: sid, userId: env.userId ?? '', status: 'active' };
      peer = { ...peer };
      if (env.type === 'cursor.move') peer.cursor = env.data as CursorData;
      else {
        const s = (env.data ?? {}) as SelectionData;
        peer.selection = s.nodes ?? [];
        peer.selectionEdges = s.edges ?? [];
      }
    }
    this.peers.set(sid, peer);
    this.emit('presence', { sessionId: sid, peer, type: env.type as PresenceEvent['type'] });
  }

  // ----- changing -----

  private newId(prefix = 'm'): string {
    return `${prefix}-${this.tag}-${++this.nextId}`;
  }

  /**
   * Makes a change: shown at once (optimistic), sent when it may go (now, or
   * after the text edit it waits for, or once connected), resent with the
   * same id after a reconnect until answered.
   */
  mutate(body: Mutation): Promise<Outcome> {
    const id = this.newId();
    const outcome = new Promise<Outcome>((resolve, reject) => {
      let released: Envelope | undefined;
      try {
        released = this.replica.localMutation(id, body);
      } catch (e) {
        reject(e);
        return;
      }
      this.replies.set(id, { resolve, reject });
      this.bodies.set(id, structuredClone(body));
      if (released) this.sendReleased([released]);
      this.emit('change', { ...touched(body, (n) => this.replica.server.adjacency.get(n) ?? []), userId: this.userId, sessionId: this.sessionId, local: true, ref: id });
      this.refreshPending();
    });
    // Fire and forget is fine (a page moving nodes does not wait for each answer): a
    // rejection at close() is not reported as unhandled; whoever awaits still gets it.
    outcome.catch(() => {});
    return outcome;
  }

  createNode(node: Node): Promise<Outcome> {
    return this.mutate({ type: 'node.create', data: { node } });
  }
  updateNode(id: string, set: NodeSet): Promise<Outcome> {
    return this.mutate({ type: 'node.update', data: { id, set } });
  }
  moveNode(id: string, x: number, y: number): Promise<Outcome> {
    return this.updateNode(id, { x, y });
  }
  deleteNode(id: string): Promise<Outcome> {
    return this.mutate({ type: 'node.delete', data: { id } });
  }
  createEdge(edge: Edge): Promise<Outcome> {
    const { id: _ignored, ...rest } = edge;
    return this.mutate({ type: 'edge.create', data: { edge: rest } });
  }
  updateEdge(id: string, set: EdgeSet): Promise<Outcome> {
    return this.mutate({ type: 'edge.update', data: { id, set } });
  }
  deleteEdge(id: string): Promise<Outcome> {
    return this.mutate({ type: 'edge.delete', data: { id } });
  }
  /** Several ops as one change, all or nothing (1 to 1,000). */
  batch(ops: Op[]): Promise<Outcome> {
    return this.mutate({ type: 'batch.update', data: { ops } });
  }

  /**
   * Edits a node's `content` to `newText`: the difference from the text as
   * this client shows it now is sent as a text operation (4.2), so edits
   * made concurrently by others are merged, not overwritten.
   *
   * `baseText`: the text the editor showed before this edit. When the
   * node's text has changed since (a remote edit the editor has not shown
   * yet), the editor's edit is merged into the current text instead of
   * undoing the remote one. Without it, an editor must show every remote
   * change (the `change` event) before the user's next input.
   */
  editContent(id: string, newText: string, baseText?: string): Promise<Outcome> {
    const current = this.replica.node(id)?.content ?? '';
    let op = ot.diff(current, newText);
    if (baseText !== undefined && baseText !== current) {
      // The editor was made from an older text: merge its edit with what changed since,
      // the changes already here first (a three-way merge through OT).
      const [, mine] = ot.transformPair(ot.diff(baseText, current), ot.diff(baseText, newText));
      op = mine;
    }
    if (ot.isNoop(op)) return Promise.resolve({ kind: 'unchanged', ref: '' });
    return this.mutate({ type: 'node.update', data: { id, text: { content: op } } });
  }
  /** Applies a text operation to a node's `content` (relative to the text as shown now). */
  editText(id: string, op: ot.TextOp): Promise<Outcome> {
    return this.mutate({ type: 'node.update', data: { id, text: { content: op } } });
  }

  // ----- presence -----

  /** Sends the cursor (graph coordinates; at most one per `cursorIntervalMs`, the latest wins). */
  cursor(x: number, y: number, nodeId?: string): void {
    this.cursorDue = nodeId === undefined ? { x, y } : { x, y, nodeId };
    if (this.cursorTimer !== undefined) return;
    const gap = this.options.cursorIntervalMs ?? 33;
    const wait = Math.max(0, this.lastCursorAt + gap - Date.now());
    const flush = () => {
      this.cursorTimer = undefined;
      const c = this.cursorDue;
      this.cursorDue = undefined;
      if (!c || !this.live) return;
      this.lastCursorAt = Date.now();
      this.send([{ id: this.newId('c'), type: 'cursor.move', data: c }]);
    };
    if (wait === 0) flush();
    else this.cursorTimer = setTimeout(flush, wait);
  }
  /** Sends the selection (node ids, and edge ids if any); sent again after a reconnect. */
  selection(nodes: string[], edges: string[] = []): void {
    this.ownSelection = { nodes, edges };
    if (this.live) this.send([{ id: this.newId('s'), type: 'selection.change', data: this.ownSelection }]);
  }
  /** Sends this session's presence (replacing the previous one); sent again after a reconnect. */
  setPresence(p: { status: 'active' | 'idle' | 'away'; focus?: string; displayName?: string; color?: string; chaosAffinity?: number }): void {
    const data: PresenceData = { status: p.status };
    for (const k of ['focus', 'displayName', 'color', 'chaosAffinity'] as const) if (p[k] !== undefined) (data as any)[k] = p[k];
    this.ownPresence = data;
    if (this.live) this.send([{ id: this.newId('p'), type: 'user.presence', data }]);
  }

  /**
   * Subscribes a region (protocol 7): its nodes arrive with `region.sync`,
   * then enter and leave as changes move them, each as a `change` event.
   * Kept, and sent again after each reconnect; the same id replaces the
   * region. Give up the region "all" ({@link unsubscribeRegion}) to see
   * only your regions: the replica then holds only what they hold, and
   * taking "all" again replaces it with the whole graph.
   */
  subscribeRegion(regionId: string, filter: RegionFilter): void {
    if (regionId === 'all' && this.cutsGraph()) this.wholeNext = true;
    this.hold(`r:${regionId}`, { type: 'region.subscribe', data: { regionId, filter } }, true);
  }

  /** Gives up a region ("all" included). */
  unsubscribeRegion(regionId: string): void {
    this.hold(`r:${regionId}`, { type: 'region.unsubscribe', data: { regionId } }, regionId === 'all');
    // From now on events come with gaps: the changes outside the regions.
    this.replica.partial = this.cutsGraph();
  }

  /** Subscribes a live query: its results arrive as `query` events, at once and whenever they change. */
  subscribeQuery(queryId: string, query: Query): void {
    this.hold(`q:${queryId}`, { type: 'query.subscribe', data: { queryId, query } }, true);
  }

  unsubscribeQuery(queryId: string): void {
    this.hold(`q:${queryId}`, { type: 'query.unsubscribe', data: { queryId } }, false);
  }

  /** Notes a subscription (kept, or forgotten) and sends it when connected. */
  private hold(key: string, e: Omit<Envelope, 'id'>, keep: boolean): void {
    const envelope = { ...e, id: this.newId('r') } as Envelope;
    this.subscriptions.delete(key);
    if (keep) this.subscriptions.set(key, envelope);
    if (this.live) this.send([envelope]);
  }

  /** Whether the regions held cut the graph: the region "all" was given up. */
  private cutsGraph(): boolean {
    return this.subscriptions.get('r:all')?.type === 'region.unsubscribe';
  }

  /**
   * Sends any message as is (sections 7 and 9: `region.subscribe`,
   * `query.subscribe`, `gonzai.suggestion`, ...); answers arrive through the
   * `message` event. Returns false when not connected. Not for mutations.
   */
  sendRaw(type: string, data: unknown = {}): boolean {
    if (isMutationType(type)) throw new Error('mutations go through mutate(), which keeps them until answered');
    if (!this.live) return false;
    this.send([{ id: this.newId('x'), type, data }]);
    return true;
  }
}
