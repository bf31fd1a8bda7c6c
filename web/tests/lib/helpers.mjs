// Shared helpers of the library's tests: a real server on a free port, clients, waiting.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import WebSocket from 'ws';
import { GitmindClient } from '../../lib/dist/index.js';

const here = dirname(fileURLToPath(import.meta.url));
export const SERVER_BIN = process.env.GITMIND_SERVER_BIN ?? resolve(here, '../../../target/debug/gitmind-server');
export const CODECS = ['json', 'binary'];

/** Starts the server; `port` to restart one on the same port and data dir. */
export async function startServer({ dataDir, port = 0, args = [] } = {}) {
  const dir = dataDir ?? mkdtempSync(join(tmpdir(), 'gitmind-lib-'));
  const proc = spawn(SERVER_BIN, ['--port', String(port), '--print-addr', '--data-dir', dir, '--no-fsync', ...args], {
    stdio: ['ignore', 'pipe', process.env.GITMIND_TEST_LOG ? 'inherit' : 'ignore'],
  });
  const addr = await new Promise((resolveAddr, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`server did not print its address: ${out}`)), 15000);
    proc.stdout.on('data', (b) => {
      out += b;
      const m = out.match(/^(\S+:\d+)\s*$/m);
      if (m) { clearTimeout(timer); resolveAddr(m[1]); }
    });
    proc.on('exit', (code) => { clearTimeout(timer); reject(new Error(`server exited with ${code}`)); });
  });
  const exited = new Promise((r) => proc.on('exit', r));
  return {
    dir, addr, port: Number(addr.split(':').pop()), url: `ws://${addr}`, http: `http://${addr}`,
    async stop(signal = 'SIGTERM') { proc.kill(signal); await exited; },
    cleanup() { rmSync(dir, { recursive: true, force: true }); },
  };
}

let graphs = 0;
/** A fresh graph name per test. */
export function graphName(prefix = 'g') {
  return `${prefix}-${process.pid}-${++graphs}-${Date.now() % 100000}`;
}

export function client(server, graph, user, codec, extra = {}) {
  return new GitmindClient({ url: server.url, graph, user, codec, WebSocket, backoff: { baseMs: 50, capMs: 500, jitter: true }, ...extra });
}

/** Waits for `pred()` to hold, polling. */
export async function until(pred, what = 'condition', ms = 10000) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await pred();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Connects and waits for the first sync. */
export async function connected(c) {
  const synced = new Promise((r) => c.on('synced', r));
  c.connect();
  await synced;
  return c;
}

/** The graph as the server has committed it (GET /v1/graphs/{graph}). */
export async function snapshot(server, graph) {
  const res = await fetch(`${server.http}/v1/graphs/${graph}`);
  if (!res.ok) throw new Error(`snapshot: ${res.status}`);
  return res.json();
}
