// The graph on screen: a graphology copy of the client's replica, drawn by
// sigma (WebGL), laid out by ForceAtlas2 in a worker when positions are
// missing, with other people's cursors and selections drawn over it.
//
// A large graph (more than EDGE_LIMIT edges) is drawn with every node but
// only the edges of the selected nodes (the user's and other people's):
// hundreds of thousands of edges cost seconds a frame where WebGL runs in
// software, and are a grey haze anyway. "All edges" (e) draws them all.
//
// Sigma reprocesses every node (extent, label grid, z-order, WebGL
// buffers) whenever any node's attributes change: 260 ms for the Debian
// graph without a GPU (perf-reports/web-16.md), on every frame that
// carries a move. So this view takes attribute changes of nodes sigma has
// already placed into its own hands and repaints only those nodes; the
// full pass runs when nodes come or go, when the z-order changes (a
// selection), and at most every REINDEX_MS to bring the label grid up to
// date.

import Graph from "graphology";
import Sigma from "sigma";
import { NodeCircleProgram, NodePointProgram } from "sigma/rendering";
import FA2Layout from "graphology-layout-forceatlas2/worker";
import forceAtlas2 from "graphology-layout-forceatlas2";
import { edgeId } from "../../lib/src/index";
import type { GitmindClient, Node, Edge, Peer } from "../../lib/src/index";

export type NodeAttrs = {
  type?: "circle" | "point";
  x: number;
  y: number;
  size: number;
  color: string;
  label: string;
  highlighted?: boolean;
};

/** Above this many edges, only the selected nodes' edges are drawn. */
export const EDGE_LIMIT = 20_000;
/**
 * Above this many nodes, nodes are drawn as points (one vertex each) rather
 * than instanced triangles: six times the frame rate where WebGL runs in
 * software (perf-reports/web-16.md), the same discs on screen.
 */
export const POINT_LIMIT = 5_000;
/** Up to this many nodes, every label is drawn; above, only those of large enough nodes. */
const ALL_LABELS_LIMIT = 500;
/** At most this many edges are drawn for the selections. */
const FOCUS_EDGES = 5_000;
/** How long a change by someone else stays highlighted. */
const FLASH_MS = 1_500;
/** The full pass after repaints is put off by at least this long. */
const REINDEX_MS = 2_000;

const KIND_COLORS: Record<string, string> = {
  library: "#6e7781",
  tool: "#0969da",
  document: "#8250df",
  concept: "#1a7f37",
  person: "#bf3989",
  project: "#bc4c00",
};

/**
 * A colour for a user, the same in every browser: a hue from the name, dark
 * enough for white text. Hex, because that is what the WebGL renderer reads.
 */
export function userColor(userId: string): string {
  let hash = 0;
  for (const ch of userId) hash = (hash * 31 + ch.codePointAt(0)!) | 0;
  const hue = Math.abs(hash) % 360;
  const [s, l] = [0.7, 0.28]; // white names on it: contrast 4.5:1 or more
  const channel = (n: number) => {
    const k = (n + hue / 30) % 12;
    const v = l - s * Math.min(l, 1 - l) * Math.max(-1, Math.min(k - 3, 9 - k, 1));
    return Math.round(v * 255).toString(16).padStart(2, "0");
  };
  return `#${channel(0)}${channel(8)}${channel(4)}`;
}

/** A position for a node that has none yet: a point of a disc, from its id. */
function seedPosition(id: string, radius: number): { x: number; y: number } {
  let a = 2166136261;
  let b = 5381;
  for (let i = 0; i < id.length; i++) {
    a = Math.imul(a ^ id.charCodeAt(i), 16777619);
    b = (b * 33 + id.charCodeAt(i)) | 0;
  }
  const angle = ((a >>> 0) / 2 ** 32) * 2 * Math.PI;
  const r = Math.sqrt((b >>> 0) / 2 ** 32) * radius;
  return { x: Math.cos(angle) * r, y: Math.sin(angle) * r };
}

export class GraphView {
  readonly graph = new Graph<NodeAttrs>({ multi: true, type: "directed", allowSelfLoops: true });
  readonly sigma: Sigma<NodeAttrs>;
  /** Nodes this view placed itself (their server position was 0, 0). */
  readonly unplaced = new Set<string>();
  selected: string | null = null;
  /** Node id -> colour of the people who have it selected. */
  private peerSelections = new Map<string, string>();
  /** Node id -> time until which a change by someone else is shown. */
  private flashes = new Map<string, number>();
  private matches = new Set<string>();
  private layout: FA2Layout | null = null;
  /** Edge ids by node id, for every edge of the replica. */
  private adjacency = new Map<string, Set<string>>();
  /** Source and target by edge id, for every edge of the replica. */
  private ends = new Map<string, [string, string]>();
  /** Whether every edge is drawn (else only the selections'). */
  allEdges = true;
  /** Whether nodes are drawn as points (a large graph). */
  private pointNodes = false;
  private cursorLayer: HTMLElement;
  private cursorEls = new Map<string, HTMLElement>();
  /** Whether nodes or edges came since sigma's last full pass (it has
   * not placed them, and will reprocess everything anyway). */
  private passDue = false;
  private flashTimer: ReturnType<typeof setTimeout> | null = null;
  private reindexTimer: ReturnType<typeof setTimeout> | null = null;

  constructor(
    private client: GitmindClient,
    container: HTMLElement,
    cursorLayer: HTMLElement,
  ) {
    this.cursorLayer = cursorLayer;
    this.sigma = new Sigma<NodeAttrs>(this.graph, container, {
      hideEdgesOnMove: true,
      defaultEdgeColor: "#d0d7de",
      zIndex: true,
      nodeProgramClasses: { circle: NodeCircleProgram, point: NodePointProgram },
      nodeReducer: (id, attrs) => {
        const out: Partial<NodeAttrs> & { zIndex?: number; forceLabel?: boolean } = { ...attrs };
        const peer = this.peerSelections.get(id);
        if (id === this.selected) {
          out.highlighted = true;
          out.color = userColor(this.client.userId ?? "");
          out.zIndex = 2;
          out.forceLabel = true;
        } else if (peer) {
          out.highlighted = true;
          out.color = peer;
          out.zIndex = 1;
          out.forceLabel = true;
        } else if ((this.flashes.get(id) ?? 0) > performance.now()) {
          out.highlighted = true;
          out.color = "#fb8500";
          out.size = attrs.size * 1.8;
        }
        if (this.matches.size && !this.matches.has(id) && id !== this.selected) {
          out.color = "#eaeef2";
          out.label = "";
        }
        return out;
      },
    });
    this.sigma.on("afterRender", () => this.placeCursors());
    this.graph.on("nodeAdded", () => (this.passDue = true));
    this.graph.on("edgeAdded", () => (this.passDue = true));
    this.sigma.on("beforeProcess", () => (this.passDue = false));
    // Sigma 3.0's own listener reprocesses the whole graph (see the top of
    // this file); `activeListeners` is its internal table (the version is
    // pinned in package.json).
    const own = (this.sigma as unknown as { activeListeners: Record<string, (...args: unknown[]) => void> }).activeListeners;
    this.graph.removeListener("nodeAttributesUpdated", own.updateNodeGraphUpdate);
    this.graph.on("nodeAttributesUpdated", ({ key }) => this.repaint([key]));
  }

  /**
   * Redraws `nodes` (and their drawn edges) on the next frame without
   * reprocessing the graph; nodes sigma has not placed yet, and a `reorder`
   * (a z-order that changed), take the full pass instead.
   */
  private repaint(nodes: Iterable<string>, reorder = false): void {
    const ids = [...nodes].filter((id) => this.graph.hasNode(id));
    if (reorder || this.passDue) {
      this.sigma.refresh({ partialGraph: { nodes: ids }, schedule: true });
      return;
    }
    const edges = ids.flatMap((id) => this.graph.edges(id));
    this.sigma.refresh({ partialGraph: { nodes: ids, edges }, skipIndexation: true, schedule: true });
    // Labels are placed by the grid of the last full pass.
    this.reindexTimer ??= setTimeout(() => {
      this.reindexTimer = null;
      this.sigma.refresh({ partialGraph: { nodes: [] }, schedule: true });
    }, REINDEX_MS);
  }

  /** Replaces the whole graph (after a full sync). */
  load(): void {
    this.stopLayout();
    this.graph.clear();
    this.unplaced.clear();
    this.adjacency.clear();
    this.ends.clear();
    for (const edge of this.client.edges.values()) this.link(edgeId(edge), [edge.source, edge.target]);
    this.allEdges = this.client.edges.size <= EDGE_LIMIT;
    this.pointNodes = this.client.nodes.size > POINT_LIMIT;
    const radius = Math.sqrt(this.client.nodes.size) * 10 + 10;
    this.graph.import({
      nodes: [...this.client.nodes.values()].map((node) => ({
        key: node.id,
        attributes: { ...this.attrs(node, radius), size: sizeOf(this.degree(node.id)) },
      })),
    });
    this.drawEdges();
    this.labelAll();
  }

  /** Labels every node of a small graph, only the larger nodes of a large one. */
  private labelAll(): void {
    const threshold = this.graph.order <= ALL_LABELS_LIMIT ? 0 : 8;
    if (this.sigma.getSetting("labelRenderedSizeThreshold") !== threshold) this.sigma.setSetting("labelRenderedSizeThreshold", threshold);
  }

  /** How many edges a node has in the replica. */
  degree(id: string): number {
    return this.adjacency.get(id)?.size ?? 0;
  }

  /** The node's neighbours in the replica, sorted. */
  neighbours(id: string): string[] {
    const out = new Set<string>();
    for (const key of this.adjacency.get(id) ?? []) {
      const edge = this.client.edges.get(key);
      if (edge) out.add(edge.source === id ? edge.target : edge.source);
    }
    return [...out].sort();
  }

  /** Records (or, with `null`, forgets) the ends of edge `key`. */
  private link(key: string, ends: [string, string] | null): void {
    for (const end of this.ends.get(key) ?? []) {
      const set = this.adjacency.get(end);
      set?.delete(key);
      if (set?.size === 0) this.adjacency.delete(end);
    }
    if (!ends) {
      this.ends.delete(key);
      return;
    }
    this.ends.set(key, ends);
    for (const end of ends) {
      let set = this.adjacency.get(end);
      if (!set) this.adjacency.set(end, (set = new Set()));
      set.add(key);
    }
  }

  /** Draws every edge, or only those of the selected nodes. */
  setAllEdges(on: boolean): void {
    this.allEdges = on;
    this.drawEdges();
  }

  /** Whether a node is selected, by this user or by someone else. */
  private focused(id: string): boolean {
    return id === this.selected || this.peerSelections.has(id);
  }

  /** The edges that should be drawn now. */
  private wantedEdges(): Iterable<string> {
    if (this.allEdges) return this.client.edges.keys();
    const wanted = new Set<string>();
    for (const id of [this.selected, ...this.peerSelections.keys()]) {
      for (const key of (id && this.adjacency.get(id)) || []) {
        if (wanted.size >= FOCUS_EDGES) return wanted;
        wanted.add(key);
      }
    }
    return wanted;
  }

  private drawEdges(): void {
    const wanted = new Set(this.wantedEdges());
    for (const key of this.graph.edges()) if (!wanted.has(key)) this.graph.dropEdge(key);
    for (const key of wanted) {
      const edge = this.client.edges.get(key);
      if (edge && !this.graph.hasEdge(key)) this.putEdge(edge);
    }
  }

  /** Applies the changes of one event to the drawing. */
  update(nodes: Iterable<string>, edges: Iterable<string>, flash: boolean): void {
    const radius = Math.sqrt(this.graph.order) * 10 + 10;
    for (const id of nodes) {
      const node = this.client.nodes.get(id);
      if (!node) {
        if (this.graph.hasNode(id)) this.graph.dropNode(id);
        this.unplaced.delete(id);
        continue;
      }
      const attrs = this.attrs(node, radius);
      if (this.graph.hasNode(id)) {
        const had = this.graph.getNodeAttributes(id);
        // Positions the layout is still working on stay until it is done.
        if (this.unplaced.has(id) && !node.x && !node.y) {
          attrs.x = had.x;
          attrs.y = had.y;
        }
        attrs.size = had.size;
        this.graph.replaceNodeAttributes(id, attrs);
      } else {
        this.graph.addNode(id, { ...attrs, size: sizeOf(0) });
      }
      if (flash) this.flash(id);
    }
    const resized = new Set<string>();
    for (const key of edges) {
      const edge = this.client.edges.get(key);
      for (const end of this.ends.get(key) ?? []) resized.add(end);
      this.link(key, edge ? [edge.source, edge.target] : null);
      if (this.graph.hasEdge(key)) this.graph.dropEdge(key);
      if (!edge) continue;
      resized.add(edge.source).add(edge.target);
      if (this.allEdges || this.focused(edge.source) || this.focused(edge.target)) {
        this.putEdge(edge);
      }
      if (flash) {
        this.flash(edge.source);
        this.flash(edge.target);
      }
    }
    for (const id of resized) {
      if (this.graph.hasNode(id)) this.graph.setNodeAttribute(id, "size", sizeOf(this.degree(id)));
    }
    this.labelAll();
  }

  private attrs(node: Node, radius: number): NodeAttrs {
    let x = node.x ?? 0;
    let y = node.y ?? 0;
    if (!x && !y) {
      this.unplaced.add(node.id);
      ({ x, y } = seedPosition(node.id, radius));
    } else {
      this.unplaced.delete(node.id);
    }
    return {
      type: this.pointNodes ? "point" : "circle",
      x,
      y,
      size: sizeOf(0),
      color: KIND_COLORS[node.kind ?? ""] ?? "#57606a",
      label: node.label || node.id,
    };
  }

  private putEdge(edge: Edge): void {
    if (!this.graph.hasNode(edge.source) || !this.graph.hasNode(edge.target)) return;
    this.graph.addDirectedEdgeWithKey(edgeId(edge), edge.source, edge.target, { type: "arrow" });
  }

  private flash(id: string): void {
    // Re-inserted, so the map stays in the order the flashes end.
    this.flashes.delete(id);
    this.flashes.set(id, performance.now() + FLASH_MS);
    this.repaint([id]);
    this.flashTimer ??= setTimeout(() => this.endFlashes(), FLASH_MS);
  }

  private endFlashes(): void {
    const now = performance.now();
    const ended: string[] = [];
    for (const [id, until] of this.flashes) {
      if (until > now) break;
      this.flashes.delete(id);
      ended.push(id);
    }
    this.repaint(ended);
    const next = this.flashes.values().next();
    this.flashTimer = next.done ? null : setTimeout(() => this.endFlashes(), Math.max(16, next.value - now));
  }

  setSearch(matches: Iterable<string>): void {
    this.matches = new Set(matches);
    this.sigma.refresh({ skipIndexation: true, schedule: true });
  }

  select(id: string | null): void {
    const was = this.selected;
    this.selected = id;
    if (!this.allEdges) this.drawEdges();
    this.repaint([was, id].filter((n) => n !== null), true);
  }

  /** Moves the camera to a node. */
  focus(id: string): void {
    const data = this.sigma.getNodeDisplayData(id);
    if (!data) return;
    const camera = this.sigma.getCamera();
    const still = matchMedia("(prefers-reduced-motion: reduce)").matches;
    camera.animate({ x: data.x, y: data.y, ratio: Math.min(camera.ratio, 0.5) }, { duration: still ? 0 : 300 });
  }

  /** Draws other people's selections and cursors. */
  setPeers(peers: Iterable<Peer>, self: string | undefined): void {
    const before = this.peerSelections;
    this.peerSelections = new Map();
    const seen = new Set<string>();
    for (const peer of peers) {
      if (peer.sessionId === self) continue;
      const color = peer.color || userColor(peer.userId);
      for (const id of peer.selection ?? []) this.peerSelections.set(id, color);
      if (!peer.cursor) continue;
      seen.add(peer.sessionId);
      let el = this.cursorEls.get(peer.sessionId);
      if (!el) {
        el = document.createElement("div");
        el.className = "cursor";
        el.innerHTML =
          '<svg width="14" height="18" viewBox="0 0 14 18"><path d="M0 0 L14 11 L7 11 L4 18 Z"/></svg><span></span>';
        this.cursorLayer.append(el);
        this.cursorEls.set(peer.sessionId, el);
      }
      el.dataset.user = peer.userId;
      el.dataset.x = String(peer.cursor.x);
      el.dataset.y = String(peer.cursor.y);
      el.querySelector("path")!.setAttribute("fill", color);
      const name = el.querySelector("span")!;
      name.textContent = peer.displayName || peer.userId;
      name.style.background = color;
    }
    for (const [session, el] of this.cursorEls) {
      if (!seen.has(session)) {
        el.remove();
        this.cursorEls.delete(session);
      }
    }
    this.placeCursors();
    const changed = new Set<string>();
    for (const [id, color] of this.peerSelections) if (before.get(id) !== color) changed.add(id);
    for (const id of before.keys()) if (!this.peerSelections.has(id)) changed.add(id);
    if (changed.size === 0) return;
    if (!this.allEdges) this.drawEdges();
    this.repaint(changed, true);
  }

  private placeCursors(): void {
    for (const el of this.cursorEls.values()) {
      const at = this.sigma.graphToViewport({ x: Number(el.dataset.x), y: Number(el.dataset.y) });
      el.style.transform = `translate(${at.x}px, ${at.y}px)`;
    }
  }

  /**
   * Runs ForceAtlas2 in a worker while nodes lack a position; when it
   * settles (or after `maxMs`), hands the new positions to `persist`.
   */
  layoutMissing(maxMs: number, persist: (positions: Map<string, { x: number; y: number }>) => void): boolean {
    if (this.unplaced.size === 0 || this.layout) return false;
    // The layout runs on a graph of its own holding every edge (the drawn
    // one may hold only some); nodes that have a position stay where they
    // are, so new nodes settle among them.
    const layoutGraph = new Graph({ multi: true, type: "directed", allowSelfLoops: true });
    this.graph.forEachNode((id, { x, y }) => layoutGraph.addNode(id, { x, y, fixed: !this.unplaced.has(id) }));
    for (const [key, [source, target]] of this.ends) {
      if (layoutGraph.hasNode(source) && layoutGraph.hasNode(target)) layoutGraph.addDirectedEdgeWithKey(key, source, target);
    }
    const settings = forceAtlas2.inferSettings(layoutGraph);
    this.layout = new FA2Layout(layoutGraph, { settings: { ...settings, barnesHutOptimize: layoutGraph.order > 2000 } });
    this.layout.start();
    const copy = () =>
      this.graph.updateEachNodeAttributes(
        (id, attrs) => {
          if (!this.unplaced.has(id) || !layoutGraph.hasNode(id)) return attrs;
          const { x, y } = layoutGraph.getNodeAttributes(id);
          return { ...attrs, x, y };
        },
        { attributes: ["x", "y"] },
      );
    const shown = setInterval(copy, 1000);
    const ends = Date.now() + maxMs;
    const stop = setInterval(() => {
      if (this.layout && Date.now() < ends) return;
      clearInterval(stop);
      clearInterval(shown);
      if (!this.layout) return; // stopped by a new sync
      this.stopLayout();
      copy();
      const positions = new Map<string, { x: number; y: number }>();
      for (const id of this.unplaced) {
        if (!this.graph.hasNode(id)) continue;
        const { x, y } = this.graph.getNodeAttributes(id);
        positions.set(id, { x: Math.round(x * 100) / 100, y: Math.round(y * 100) / 100 });
      }
      this.unplaced.clear();
      persist(positions);
    }, 250);
    return true;
  }

  get layoutRunning(): boolean {
    return this.layout !== null;
  }

  stopLayout(): void {
    this.layout?.kill();
    this.layout = null;
  }
}

function sizeOf(degree: number): number {
  return 2 + Math.log2(1 + degree) * 1.5;
}
