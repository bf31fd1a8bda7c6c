// Measures the page with the whole Debian graph (63,666 nodes, 274,686
// edges): time to first render, and frame rate while 100 node moves a
// second arrive from another client, in headless Chromium. Not a test (it
// asserts nothing); perf-reports/web-16.md gives its figures.
//
//   node --experimental-websocket tests/perf/debian.mjs [--runs 3] [--seconds 10] [--screenshot FILE]
//
// With `--server URL`, a running server is used; `--layout` then imports
// nothing but makes the first visit that lays the graph out (import it
// first with `gitmind import debian ...`). `--page URL` opens the page from
// elsewhere than the server, such as `npx vite preview --outDir DIR` of a
// build being compared (the server needs `--allowed-origin` for it).
//
// Uses the release binaries (GITMIND_BIN_DIR, default ../target/release):
// gitmind-server, and gitmind to import the dataset.

import { execFileSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { resolve, join } from "node:path";
import { parseArgs } from "node:util";
import { Server, launchBrowser, waitConnected } from "../support.mjs";

const { values: opts } = parseArgs({
  options: {
    runs: { type: "string", default: "3" },
    seconds: { type: "string", default: "10" },
    rate: { type: "string", default: "100" },
    screenshot: { type: "string" },
    // A running server whose `debian` graph is imported and laid out
    // already (skips the import and the first visit).
    server: { type: "string" },
    layout: { type: "boolean", default: false },
    page: { type: "string" },
    // A CPU profile of the page (Chrome DevTools' .cpuprofile) while the
    // moves arrive, in the last run; its heaviest functions are printed.
    profile: { type: "string" },
  },
});
const runs = Number(opts.runs);
const seconds = Number(opts.seconds);
const rate = Number(opts.rate);
const bins = process.env.GITMIND_BIN_DIR ?? resolve(import.meta.dirname, "../../../target/release");
process.env.GITMIND_SERVER_BIN ??= join(bins, "gitmind-server");
const dataset = process.env.GITMIND_DATASET ?? resolve(import.meta.dirname, "../../../../shared/datasets/debian-bookworm.jsonl.zst");
const graph = "debian";

const running = opts.server ? new URL(opts.server) : null;
const server = running ? { url: running.origin, port: Number(running.port), dispose: async () => {} } : await new Server().start();
const log = (...args) => console.error(`[${new Date().toISOString().slice(11, 19)}]`, ...args);
try {
  const browser = await launchBrowser();
  const viewport = { width: 1280, height: 800 };
  let page;
  if (!running || opts.layout) {
    if (!running) {
      log(`importing ${dataset}`);
      execFileSync(join(bins, "gitmind"), ["--server", `ws://127.0.0.1:${server.port}`, "import", graph, dataset], { stdio: ["ignore", "ignore", "inherit"] });
    }
    // The first visit lays the graph out and stores the positions.
    log("first visit: layout");
    page = await open(browser, viewport);
    await page.waitForFunction(() => !window.gitmind.view.layoutRunning && window.gitmind.view.unplaced.size === 0, null, { timeout: 120_000, polling: 500 });
    await waitConnected(page, 300_000);
    await page.context().close();
  }

  const results = [];
  for (let run = 0; run < runs; run++) {
    page = await open(browser, viewport);
    const firstRenderMs = await page.evaluate(() => window.gitmind.firstRender());
    const idleFps = await fps(page, seconds);
    // The picture of the graph as loaded, before anything moves.
    if (opts.screenshot && run === runs - 1) await page.screenshot({ path: opts.screenshot });
    const mover = await startMover(server.port, rate);
    const profiler = opts.profile && run === runs - 1 ? await startProfile(page) : null;
    const busy = await fps(page, seconds);
    if (profiler) await profiler.stop(opts.profile);
    const applied = await mover.stop();
    const seen = await page.evaluate(() => window.gitmind.client.nodes.size);
    results.push({ run, firstRenderMs: Math.round(firstRenderMs), idleFps, busyFps: busy, movesSent: applied, nodes: seen });
    log(JSON.stringify(results.at(-1)));
    await page.context().close();
  }
  console.log(JSON.stringify({ runs: results, rate, seconds, viewport, chromium: browser.version() }, null, 1));
  await browser.close();
} finally {
  await server.dispose();
}

async function open(browser, viewport) {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  await page.goto(`${opts.page ?? server.url}/?graph=${graph}&user=perf`);
  await page.waitForFunction(() => window.gitmind?.firstRender() !== null, null, { timeout: 300_000, polling: 100 });
  return page;
}

/**
 * Over `seconds`: the page's frames per second (requestAnimationFrame) with
 * the median and 95th-percentile frame time, how many times a second sigma
 * drew the graph (its `afterRender`), the median script time of a draw,
 * and how many of the draws reprocessed the whole graph (sigma's
 * `process`).
 */
function fps(page, seconds) {
  return page.evaluate(
    (seconds) =>
      new Promise((resolve) => {
        const times = [];
        const drawMs = [];
        let passes = 0;
        let started = 0;
        const sigma = window.gitmind.view.sigma;
        const before = () => (started = performance.now());
        const counted = () => drawMs.push(performance.now() - started);
        const passed = () => passes++;
        sigma.on("beforeRender", before);
        sigma.on("afterRender", counted);
        sigma.on("afterProcess", passed);
        const end = performance.now() + seconds * 1000;
        const frame = (now) => {
          times.push(now);
          if (now < end) requestAnimationFrame(frame);
          else {
            sigma.off("beforeRender", before);
            sigma.off("afterRender", counted);
            sigma.off("afterProcess", passed);
            const gaps = times.slice(1).map((t, i) => t - times[i]).sort((a, b) => a - b);
            drawMs.sort((a, b) => a - b);
            resolve({
              graphDrawsPerSecond: Math.round((drawMs.length / seconds) * 10) / 10,
              medianDrawScriptMs: Math.round(drawMs[Math.floor(drawMs.length / 2)] ?? 0),
              fullPasses: passes,
              fps: Math.round(((times.length - 1) / ((times.at(-1) - times[0]) / 1000)) * 10) / 10,
              medianFrameMs: Math.round(gaps[Math.floor(gaps.length / 2)] * 10) / 10,
              p95FrameMs: Math.round(gaps[Math.floor(gaps.length * 0.95)] * 10) / 10,
            });
          }
        };
        requestAnimationFrame(frame);
      }),
    seconds,
  );
}

/** Records a CPU profile of the page until `stop(file)`. */
async function startProfile(page) {
  const cdp = await page.context().newCDPSession(page);
  await cdp.send("Profiler.enable");
  await cdp.send("Profiler.setSamplingInterval", { interval: 200 });
  await cdp.send("Profiler.start");
  return {
    async stop(file) {
      const { profile } = await cdp.send("Profiler.stop");
      writeFileSync(file, JSON.stringify(profile));
      // Self time by function, heaviest first.
      const self = new Map();
      const total = profile.endTime - profile.startTime;
      const byId = new Map(profile.nodes.map((n) => [n.id, n]));
      profile.samples.forEach((id, i) => {
        const { functionName, url, lineNumber } = byId.get(id).callFrame;
        const key = `${functionName || "(anonymous)"} ${url.split("/").pop()}:${lineNumber + 1}`;
        self.set(key, (self.get(key) ?? 0) + (profile.timeDeltas[i] ?? 0));
      });
      const top = [...self].sort((a, b) => b[1] - a[1]).slice(0, 25);
      for (const [key, us] of top) log(`${((100 * us) / total).toFixed(1).padStart(5)}%  ${key}`);
    },
  };
}

/** Another client moving random nodes `rate` times a second (JSON). */
async function startMover(port, rate) {
  const ws = new WebSocket(`ws://127.0.0.1:${port}/v1/graphs/${graph}?user=mover`, "gitmind.v1.json");
  const ids = [];
  let seq = 0;
  let synced;
  const ready = new Promise((resolve) => (synced = resolve));
  ws.onmessage = (event) => {
    // A text frame is one envelope or an array of them (protocol 2.1).
    for (const msg of [JSON.parse(event.data)].flat()) {
      if (typeof msg.seq === "number") seq = Math.max(seq, msg.seq);
      if (msg.type === "graph.sync") {
        for (const node of msg.data.nodes ?? []) ids.push(node.id);
        if (!msg.data.chunk || msg.data.chunk.index === msg.data.chunk.count - 1) synced();
      }
    }
  };
  await ready;
  let sent = 0;
  const prefix = `mv${Date.now().toString(36)}`;
  const timer = setInterval(() => {
    const id = ids[Math.floor(Math.random() * ids.length)];
    const set = { x: Math.random() * 2000 - 1000, y: Math.random() * 2000 - 1000 };
    // Ids unique across runs: the server answers a repeated id with its
    // first outcome and applies nothing (protocol 4.4).
    ws.send(JSON.stringify({ id: `${prefix}-${sent++}`, type: "node.update", data: { baseSeq: seq, id, set } }));
  }, 1000 / rate);
  return {
    async stop() {
      clearInterval(timer);
      ws.close();
      return sent;
    },
  };
}
