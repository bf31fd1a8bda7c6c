// The page: connects to the server it was served by, draws the graph,
// shows who is here, and edits nodes and their text with everyone else.
//
// URL: /?graph=NAME&user=NAME&codec=json|binary, and #access_token=JWT
// when the server wants one (kept out of the query so it is not logged).

import { GitmindClient, ot } from "../../lib/src/index";
import type { Peer } from "../../lib/src/index";
import { GraphView, userColor } from "./view";

const params = new URLSearchParams(location.search);
const graphName = params.get("graph") || "demo";
const user = params.get("user") || localStorage.getItem("gitmind.user") || `guest-${Math.random().toString(36).slice(2, 7)}`;
localStorage.setItem("gitmind.user", user);
const codec = params.get("codec") === "binary" ? "binary" : "json";
const token = new URLSearchParams(location.hash.slice(1)).get("access_token") ?? undefined;

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;
$("graph-name").textContent = graphName;
document.title = `${graphName} · Gitmind live`;

const client = new GitmindClient({
  url: `${location.protocol === "https:" ? "wss:" : "ws:"}//${location.host}`,
  graph: graphName,
  user,
  codec,
  token: token ? () => token : undefined,
});
const view = new GraphView(client, $("graph"), $("cursors"));
const color = userColor(user);
let firstRender: number | null = null;

// -- connection state ------------------------------------------------------

const status = $("status");
const statusText = $("status-text");
function showState(): void {
  const { kind, retryAt, pending } = client.state;
  status.dataset.state = kind;
  const waiting = pending ? `, ${pending} pending change${pending === 1 ? "" : "s"}` : "";
  if (kind === "reconnecting" && retryAt !== undefined) {
    const seconds = Math.max(0, Math.ceil((retryAt - Date.now()) / 1000));
    statusText.textContent = `reconnecting in ${seconds} s${waiting}`;
  } else if (kind === "offline" || !navigator.onLine) {
    statusText.textContent = `offline${waiting}`;
  } else {
    statusText.textContent = kind + waiting;
  }
}
client.on("state", showState);
addEventListener("online", () => client.reconnect("the browser is online again"));
setInterval(showState, 250);

// -- the graph -------------------------------------------------------------

client.on("synced", (sync) => {
  // A delta (a resume) came as change events; a snapshot replaces all.
  if (sync.mode === "snapshot" || view.graph.order === 0) {
    view.load();
    edgesButton.setAttribute("aria-pressed", String(view.allEdges));
  }
  if (firstRender === null) {
    view.sigma.once("afterRender", () => {
      firstRender = performance.now(); // since the navigation started
      performance.mark("gitmind:first-render");
    });
  }
  view.sigma.refresh();
  if (view.selected && !client.nodes.has(view.selected)) select(null);
  announcePresence();
  startLayout();
});

client.on("change", (change) => {
  view.update(change.nodes, change.edges, !change.local && change.region !== "sync");
  if (view.selected && change.nodes.includes(view.selected)) showNode(view.selected);
});

client.on("rollback", (rollback) => {
  toast(`Change refused (${rollback.code}): ${rollback.message ?? ""}`);
});

/** Lays out nodes that have no position, then stores theirs. */
function startLayout(): void {
  const note = $("layout-note");
  const ran = view.layoutMissing(Math.min(30_000, 3_000 + view.graph.order), async (positions) => {
    note.textContent = `Saving the layout of ${positions.size} nodes…`;
    const ops = [...positions].map(([id, { x, y }]) => ({ type: "node.update" as const, data: { id, set: { x, y } } }));
    const batches = [];
    for (let i = 0; i < ops.length; i += 1000) batches.push(client.batch(ops.slice(i, i + 1000)));
    await Promise.allSettled(batches);
    note.hidden = true;
  });
  if (ran) {
    note.hidden = false;
    note.textContent = `Laying out ${view.unplaced.size} nodes…`;
  }
}

// -- what is on screen -----------------------------------------------------
// A large graph seen up close: the page subscribes to the region on screen
// (protocol 7, with a margin) and gives up the rest, so changes elsewhere
// are not sent to it; the nodes it held stay drawn as they were. Zoomed
// out again, it takes the whole graph back. `?screen=1` follows the screen
// on any graph, at any zoom.

/** Graphs with more nodes than this follow the screen when zoomed in. */
const SCREEN_NODES = 5_000;
/** Zoomed in past this camera ratio (1: the whole graph fits). */
const SCREEN_RATIO = 0.5;
type Box = [number, number, number, number];
const forceScreen = params.get("screen") === "1";
/** The region subscribed for the screen, or null: the whole graph. */
let screenBox: Box | null = null;
let screenTimer: ReturnType<typeof setTimeout> | undefined;

/** What the view shows, in graph coordinates, widened by `margin` of its size on each side. */
function visibleBox(margin: number): Box | null {
  const { width, height } = view.sigma.getDimensions();
  const a = view.sigma.viewportToGraph({ x: 0, y: 0 });
  const b = view.sigma.viewportToGraph({ x: width, y: height });
  const [x0, x1, y0, y1] = [Math.min(a.x, b.x), Math.max(a.x, b.x), Math.min(a.y, b.y), Math.max(a.y, b.y)];
  const [mx, my] = [(x1 - x0) * margin, (y1 - y0) * margin];
  const box: Box = [x0 - mx, y0 - my, x1 + mx, y1 + my];
  return width > 0 && height > 0 && box.every(Number.isFinite) ? box : null;
}

function followScreen(): void {
  const follow = forceScreen || (client.nodes.size > SCREEN_NODES && view.sigma.getCamera().ratio < SCREEN_RATIO);
  const seen = follow ? visibleBox(0) : null;
  if (!seen) {
    if (screenBox) {
      client.subscribeRegion("all", { all: true });
      client.unsubscribeRegion("screen");
      screenBox = null;
    }
  } else if (!screenBox || seen[0] < screenBox[0] || seen[1] < screenBox[1] || seen[2] > screenBox[2] || seen[3] > screenBox[3]) {
    const first = !screenBox;
    screenBox = visibleBox(0.5)!;
    client.subscribeRegion("screen", { bbox: screenBox });
    if (first) client.unsubscribeRegion("all");
  }
  $("scope").textContent = screenBox ? "Live: what is on screen" : "Live: the whole graph";
}
view.sigma.getCamera().on("updated", () => {
  clearTimeout(screenTimer);
  screenTimer = setTimeout(followScreen, 300);
});
client.on("synced", followScreen);

// -- presence --------------------------------------------------------------

function announcePresence(): void {
  client.setPresence({ status: "active", displayName: user, color, focus: view.selected ?? undefined });
}

function showPeople(): void {
  const list = $("people");
  const me: Peer = { sessionId: client.sessionId ?? "", userId: user, displayName: user, color, status: "active" };
  const peers = [me, ...[...client.presence.values()].sort((a, b) => a.userId.localeCompare(b.userId))];
  list.replaceChildren(
    ...peers.map((peer: Peer) => {
      const li = document.createElement("li");
      li.dataset.user = peer.userId;
      const swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.style.background = peer.color || userColor(peer.userId);
      const name = document.createElement("span");
      name.textContent = (peer.displayName || peer.userId) + (peer === me ? " (you)" : "");
      const state = document.createElement("span");
      state.className = "status";
      state.textContent = peer.status;
      li.append(swatch, name, state);
      return li;
    }),
  );
  view.setPeers(client.presence.values(), client.sessionId);
}
client.on("presence", showPeople);
client.on("synced", showPeople);

let cursorSent = 0;
let cursorTimer: ReturnType<typeof setTimeout> | null = null;
let lastCursor: { x: number; y: number; nodeId?: string } | null = null;
/** Sends the cursor at most 20 times a second (the server relays 30). */
function sendCursor(x: number, y: number, nodeId?: string): void {
  lastCursor = { x, y, nodeId };
  const wait = cursorSent + 50 - performance.now();
  if (wait <= 0) {
    cursorSent = performance.now();
    client.cursor(x, y, nodeId);
  } else if (!cursorTimer) {
    cursorTimer = setTimeout(() => {
      cursorTimer = null;
      if (lastCursor) sendCursor(lastCursor.x, lastCursor.y, lastCursor.nodeId);
    }, wait);
  }
}

// -- pointer: hover, select, drag, link ------------------------------------

let hovered: string | undefined;
let dragging: string | null = null;
let linking = false;
const linkButton = $<HTMLButtonElement>("link-node");

view.sigma.on("enterNode", ({ node }) => (hovered = node));
view.sigma.on("leaveNode", () => (hovered = undefined));
view.sigma.getMouseCaptor().on("mousemovebody", (event) => {
  const at = view.sigma.viewportToGraph(event);
  sendCursor(at.x, at.y, hovered);
  if (dragging) {
    view.graph.mergeNodeAttributes(dragging, at);
    event.preventSigmaDefault();
    event.original.preventDefault();
  }
});
view.sigma.on("downNode", ({ node }) => {
  if (linking) return;
  dragging = node;
  view.sigma.getCamera().disable();
});
view.sigma.getMouseCaptor().on("mouseup", () => {
  if (!dragging) return;
  const id = dragging;
  dragging = null;
  view.sigma.getCamera().enable();
  const { x, y } = view.graph.getNodeAttributes(id);
  const node = client.nodes.get(id);
  if (node && (node.x !== x || node.y !== y)) client.moveNode(id, x, y).catch(() => undefined);
});
view.sigma.on("clickNode", ({ node }) => {
  if (linking && view.selected && node !== view.selected) {
    const type = $<HTMLSelectElement>("edge-type").value;
    client.createEdge({ source: view.selected, type, target: node }).catch(() => undefined);
    setLinking(false);
    return;
  }
  select(node);
});
view.sigma.on("clickStage", () => {
  setLinking(false);
  select(null);
});

const edgesButton = $<HTMLButtonElement>("all-edges");
function setAllEdges(on: boolean): void {
  view.setAllEdges(on);
  edgesButton.setAttribute("aria-pressed", String(on));
}
edgesButton.addEventListener("click", () => setAllEdges(!view.allEdges));

function setLinking(on: boolean): void {
  linking = on && view.selected !== null;
  linkButton.setAttribute("aria-pressed", String(linking));
}

// -- the editor ------------------------------------------------------------

const editor = $<HTMLFormElement>("editor");
const labelInput = $<HTMLInputElement>("node-label");
const contentArea = $<HTMLTextAreaElement>("node-content");

function select(id: string | null): void {
  view.select(id);
  setLinking(false);
  $<HTMLButtonElement>("delete-node").disabled = id === null;
  linkButton.disabled = id === null;
  editor.hidden = id === null;
  $("no-selection").hidden = id !== null;
  if (id) showNode(id);
  suggestions.replaceChildren();
  announcePresence();
  client.selection(id ? [id] : []);
}

/** Shows the selected node, keeping the caret where the user was typing. */
function showNode(id: string): void {
  const node = client.nodes.get(id);
  if (!node) {
    select(null);
    return;
  }
  $("node-id").textContent = node.id;
  if (document.activeElement !== labelInput) labelInput.value = node.label ?? "";
  const text = node.content ?? "";
  if (contentArea.value !== text) {
    const [start, end] = [contentArea.selectionStart, contentArea.selectionEnd];
    const old = contentArea.value;
    contentArea.value = text;
    contentArea.setSelectionRange(ot.shiftCaret(old, text, start), ot.shiftCaret(old, text, end));
  }
  $("node-meta").textContent = `${node.kind ?? "concept"} · rev ${node.rev ?? "pending"}${node.updatedBy ? ` · last changed by ${node.updatedBy}` : ""}`;
}

contentArea.addEventListener("input", () => {
  if (view.selected) client.editContent(view.selected, contentArea.value).catch(() => undefined);
});
labelInput.addEventListener("change", () => {
  if (view.selected) client.updateNode(view.selected, { label: labelInput.value }).catch(() => undefined);
});
editor.addEventListener("submit", (event) => event.preventDefault());

function newNode(): void {
  const center = view.sigma.viewportToGraph({ x: view.sigma.getContainer().clientWidth / 2, y: view.sigma.getContainer().clientHeight / 2 });
  const id = `note:${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}`;
  const jitter = () => (Math.random() - 0.5) * 20;
  client
    .createNode({ id, kind: "concept", label: "New node", x: center.x + jitter(), y: center.y + jitter() })
    .catch(() => undefined);
  select(id);
  labelInput.focus();
  labelInput.select();
}

function deleteSelected(): void {
  if (!view.selected) return;
  const id = view.selected;
  select(null);
  client.deleteNode(id).catch(() => undefined);
}

$("new-node").addEventListener("click", newNode);
linkButton.addEventListener("click", () => setLinking(!linking));
$("delete-node").addEventListener("click", deleteSelected);

// -- search ----------------------------------------------------------------

const searchInput = $<HTMLInputElement>("search-input");
const results = $("search-results");
let resultIds: string[] = [];
let active = -1;

function search(text: string): string[] {
  const needle = text.trim().toLowerCase();
  if (!needle) return [];
  const exact = client.nodes.get(text.trim());
  const found: string[] = exact ? [exact.id] : [];
  for (const node of client.nodes.values()) {
    if (found.length >= 20) break;
    if (node.id === exact?.id) continue;
    if (node.id.toLowerCase().includes(needle) || (node.label ?? "").toLowerCase().includes(needle)) found.push(node.id);
  }
  return found;
}

function showResults(): void {
  results.replaceChildren(
    ...resultIds.map((id, i) => {
      const li = document.createElement("li");
      li.id = `result-${i}`;
      li.setAttribute("role", "option");
      li.setAttribute("aria-selected", String(i === active));
      const node = client.nodes.get(id);
      li.textContent = node?.label ? `${node.label} (${id})` : id;
      li.addEventListener("mousedown", (event) => {
        event.preventDefault();
        choose(id);
      });
      return li;
    }),
  );
  searchInput.setAttribute("aria-activedescendant", active >= 0 ? `result-${active}` : "");
}

function choose(id: string): void {
  searchInput.value = "";
  resultIds = [];
  showResults();
  view.setSearch([]);
  select(id);
  view.focus(id);
  $("graph").focus();
}

searchInput.addEventListener("input", () => {
  resultIds = search(searchInput.value);
  active = resultIds.length ? 0 : -1;
  view.setSearch(resultIds);
  showResults();
});
searchInput.addEventListener("keydown", (event) => {
  if (event.key === "ArrowDown" || event.key === "ArrowUp") {
    event.preventDefault();
    if (!resultIds.length) return;
    active = (active + (event.key === "ArrowDown" ? 1 : resultIds.length - 1)) % resultIds.length;
    showResults();
  } else if (event.key === "Escape") {
    searchInput.value = "";
    resultIds = [];
    view.setSearch([]);
    showResults();
  }
});
$("search").addEventListener("submit", (event) => {
  event.preventDefault();
  if (active >= 0 && resultIds[active]) choose(resultIds[active]);
});

// -- keyboard --------------------------------------------------------------

const graphEl = $("graph");
graphEl.addEventListener("keydown", (event) => {
  const camera = view.sigma.getCamera();
  const step = 0.1 * camera.ratio;
  switch (event.key) {
    case "n":
      newNode();
      break;
    case "l":
      setLinking(!linking);
      break;
    case "e":
      setAllEdges(!view.allEdges);
      break;
    case "g":
      suggest();
      break;
    case "Delete":
      deleteSelected();
      break;
    case "Enter":
      if (view.selected) labelInput.focus();
      break;
    case "Escape":
      setLinking(false);
      select(null);
      break;
    case "+":
    case "=":
      camera.animatedZoom(1.5);
      break;
    case "-":
      camera.animatedUnzoom(1.5);
      break;
    case "ArrowRight":
    case "ArrowDown":
    case "ArrowLeft":
    case "ArrowUp": {
      const forward = event.key === "ArrowRight" || event.key === "ArrowDown";
      if (view.selected && view.graph.hasNode(view.selected)) {
        const neighbours = view.neighbours(view.selected);
        if (neighbours.length) {
          const next = neighbours[forward ? 0 : neighbours.length - 1];
          select(next);
          view.focus(next);
        }
      } else {
        const dx = event.key === "ArrowRight" ? step : event.key === "ArrowLeft" ? -step : 0;
        const dy = event.key === "ArrowUp" ? step : event.key === "ArrowDown" ? -step : 0;
        camera.setState({ x: camera.x + dx, y: camera.y + dy });
      }
      break;
    }
    default:
      return;
  }
  event.preventDefault();
});
document.addEventListener("keydown", (event) => {
  if (event.key === "/" && !(event.target instanceof HTMLInputElement || event.target instanceof HTMLTextAreaElement)) {
    event.preventDefault();
    searchInput.focus();
  }
});

// -- Gonzai ----------------------------------------------------------------

function toast(text: string, animation?: string): void {
  // The same words again (Gonzai noticing each keystroke of one edit) are
  // one toast, shown for longer.
  for (const shown of [...$("gonzai").children]) if (shown.textContent === text) shown.remove();
  const box = document.createElement("div");
  box.className = "discovery";
  if (animation) box.dataset.animation = animation;
  box.textContent = text;
  $("gonzai").append(box);
  setTimeout(() => box.remove(), 6000);
}
client.on("discover", (data) => {
  const discovery = data as { suggestion?: string; animation?: string; event?: { type: string; id: string } };
  toast(`🐒 ${discovery.suggestion ?? "Gonzai noticed something"}`, discovery.animation);
  const touched = discovery.event?.id;
  if (touched && client.nodes.has(touched)) view.update([touched], [], true);
  else if (touched) view.update([], [touched], true);
});

type Suggestion = { target: string; type: string; confidence: number; reason: string };
const suggestions = $("suggestions");
/** Asks Gonzai for links from the selected node (answered by a message). */
function suggest(): void {
  if (!view.selected) return;
  suggestions.replaceChildren(Object.assign(document.createElement("li"), { textContent: "Asking Gonzai…" }));
  client.sendRaw("gonzai.suggestion", { for: view.selected, limit: 8 });
}
function showSuggestions(list: Suggestion[]): void {
  if (!list.length) {
    suggestions.replaceChildren(Object.assign(document.createElement("li"), { textContent: "No suggestion." }));
    return;
  }
  suggestions.replaceChildren(
    ...list.map((s) => {
      const li = document.createElement("li");
      const target = client.nodes.get(s.target);
      const what = document.createElement("span");
      what.textContent = `${s.type} → ${target?.label || s.target} (${Math.round(s.confidence * 100)}%)`;
      what.title = s.reason;
      const add = document.createElement("button");
      add.type = "button";
      add.textContent = "Link";
      add.setAttribute("aria-label", `Link ${s.type} to ${s.target}: ${s.reason}`);
      add.addEventListener("click", () => {
        if (view.selected) client.createEdge({ source: view.selected, type: s.type, target: s.target }).catch(() => undefined);
        li.remove();
      });
      const why = document.createElement("small");
      why.textContent = s.reason;
      li.append(what, add, why);
      return li;
    }),
  );
}
client.on("message", (message) => {
  if (message.type === "gonzai.suggestion") {
    const data = message.data as { for?: string; suggestions?: Suggestion[] };
    if (data.for === view.selected) showSuggestions(data.suggestions ?? []);
  } else if (message.type === "chaos.trigger") {
    const data = message.data as { initiator?: string; message?: string };
    toast(`${data.message ?? "Chaos!"} (${data.initiator ?? "someone"})`, "shake");
  }
});
client.on("error", (error) => {
  if (error.ref && suggestions.textContent === "Asking Gonzai…") suggestions.replaceChildren();
  toast(`${error.code}: ${error.message ?? ""}`);
});
$("suggest").addEventListener("click", suggest);

// For tests and measurements (web/tests): the objects behind the page.
Object.assign(window, { gitmind: { client, view, firstRender: () => firstRender } });

client.connect();
