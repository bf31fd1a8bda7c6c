// What the browser tests share: a real server on a free port (restartable
// on the same port and data), Debian's Chromium driven by playwright-core,
// and pages of the app at a given graph, user and codec.

import { spawn } from "node:child_process";
import { after, before } from "node:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

const root = resolve(import.meta.dirname, "../..");
/** The server binary: GITMIND_SERVER_BIN, else the workspace's debug build. */
export const serverBin = () =>
  process.env.GITMIND_SERVER_BIN ?? join(process.env.CARGO_TARGET_DIR ?? join(root, "target"), "debug/gitmind-server");
export const chromiumBin = process.env.CHROMIUM_BIN ?? "/usr/bin/chromium";

/** A gitmind-server process with its own data directory. */
export class Server {
  constructor(extraArgs = []) {
    this.dataDir = mkdtempSync(join(tmpdir(), "gitmind-web-"));
    this.extraArgs = extraArgs;
    this.port = 0;
    this.child = null;
  }

  /** Starts the server (again on the same port once it had one). */
  async start() {
    const args = ["--port", String(this.port), "--print-addr", "--data-dir", this.dataDir, "--no-fsync", ...this.extraArgs];
    this.child = spawn(serverBin(), args, { stdio: ["ignore", "pipe", "inherit"], env: { ...process.env, RUST_LOG: "warn" } });
    const exited = new Promise((_, reject) => this.child.once("exit", (code) => reject(new Error(`server exited: ${code}`))));
    const lines = createInterface({ input: this.child.stdout });
    const addr = await Promise.race([
      new Promise((resolve) => lines.once("line", resolve)),
      exited,
      new Promise((_, reject) => setTimeout(() => reject(new Error("server did not start in 30 s")), 30_000)),
    ]);
    exited.catch(() => {});
    this.port = Number(String(addr).split(":").pop());
    this.url = `http://127.0.0.1:${this.port}`;
    return this;
  }

  /** Stops the server as an operator would (SIGTERM: it drains and commits). */
  async stop() {
    if (!this.child || this.child.exitCode !== null) return;
    const done = new Promise((resolve) => this.child.once("exit", resolve));
    this.child.kill("SIGTERM");
    await done;
  }

  async dispose() {
    await this.stop();
    rmSync(this.dataDir, { recursive: true, force: true });
  }

  /** The committed graph, from the snapshot endpoint. */
  async snapshot(graph) {
    const response = await fetch(`${this.url}/v1/graphs/${graph}`);
    if (!response.ok) throw new Error(`snapshot: ${response.status}`);
    return response.json();
  }
}

/**
 * A server on port 0 and a browser for the tests of one file, started
 * before them and stopped after them: `env.server`, `env.browser`.
 */
export function serverAndBrowser() {
  const env = {};
  before(async () => {
    env.server = await new Server().start();
    env.browser = await launchBrowser();
  });
  after(async () => {
    await env.browser?.close();
    await env.server?.dispose();
  });
  return env;
}

export async function launchBrowser() {
  return chromium.launch({
    executablePath: chromiumBin,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      // Keep timers and frames running in pages that are not in front.
      "--disable-background-timer-throttling",
      "--disable-renderer-backgrounding",
      "--disable-backgrounding-occluded-windows",
    ],
  });
}

/**
 * Opens the app as `user` on `graph` (`query`: more of the URL's query,
 * such as "&screen=1") and waits until it has its first sync.
 * Errors in the page fail the test.
 */
export async function openApp(browser, server, { graph, user, codec = "json", viewport = { width: 1200, height: 760 }, query = "" }) {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  page.errors = [];
  page.on("pageerror", (error) => page.errors.push(error));
  page.on("console", (message) => {
    if (message.type() === "error") page.errors.push(new Error(message.text()));
  });
  await page.goto(`${server.url}/?graph=${graph}&user=${user}&codec=${codec}${query}`);
  await waitConnected(page);
  return page;
}

export async function waitConnected(page, timeout = 20_000) {
  await page.waitForFunction(() => window.gitmind?.client.state.kind === "connected" && window.gitmind.client.state.pending === 0, null, { timeout, polling: 100 });
}

/** Selects a node as a user does: search for its id, Enter. */
export async function selectNode(page, id) {
  await page.keyboard.press("Escape");
  await page.click("#search-input");
  await page.fill("#search-input", id);
  await page.keyboard.press("Enter");
  await page.waitForFunction((id) => window.gitmind.view.selected === id, id);
}

/** Polls `fn` in the page until it returns a truthy value. */
export function until(page, fn, arg, timeout = 10_000) {
  return page.waitForFunction(fn, arg, { timeout, polling: 50 });
}

export const codecs = ["json", "binary"];
