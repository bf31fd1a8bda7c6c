// The library in a real browser (Debian's chromium through playwright-core), bundled by Vite
// as the page bundles it: both codecs, zstd frames with the dictionary decoded in the browser.
// Skipped when there is no chromium.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, writeFileSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join, dirname, resolve, extname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startServer, graphName, client, connected, until, CODECS } from './helpers.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const CHROMIUM = process.env.CHROMIUM_BIN ?? '/usr/bin/chromium';

test('the library works in chromium in both codecs', { skip: !existsSync(CHROMIUM) && 'no chromium', timeout: 120000 }, async () => {
  const { build } = await import('vite');
  const { chromium } = await import('playwright-core');
  const dir = mkdtempSync(join(tmpdir(), 'gm-browser-'));
  writeFileSync(join(dir, 'index.html'), '<!doctype html><title>lib</title><script type="module" src="./main.ts"></script>');
  writeFileSync(join(dir, 'main.ts'), `import { GitmindClient } from ${JSON.stringify(resolve(here, '../../lib/src/index.ts'))};\n(window as any).GitmindClient = GitmindClient;\n`);
  await build({ root: dir, logLevel: 'warn', build: { outDir: join(dir, 'out'), emptyOutDir: true } });
  const types = { '.html': 'text/html', '.js': 'text/javascript', '.wasm': 'application/wasm' };
  const http = createServer((req, res) => {
    const file = join(dir, 'out', req.url === '/' ? 'index.html' : req.url.split('?')[0]);
    if (!existsSync(file)) { res.writeHead(404).end(); return; }
    res.writeHead(200, { 'content-type': types[extname(file)] ?? 'application/octet-stream' }).end(readFileSync(file));
  });
  await new Promise((r) => http.listen(0, '127.0.0.1', r));
  const origin = `http://127.0.0.1:${http.address().port}`;
  const server = await startServer({ args: ['--allowed-origin', origin] });
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
  try {
    const page = await browser.newPage();
    const errors = [];
    page.on('pageerror', (e) => errors.push(e.message));
    await page.goto(origin);
    await page.waitForFunction(() => 'GitmindClient' in window);
    for (const codec of CODECS) {
      const g = graphName('browser');
      const other = await connected(client(server, g, 'node-side', codec));
      await page.evaluate(async ({ url, g, codec }) => {
        const c = new window.GitmindClient({ url, graph: g, user: 'browser', codec });
        window.c = c;
        await new Promise((r) => { c.on('synced', r); c.connect(); });
        await c.createNode({ id: 'concept:from-browser', label: 'B', content: 'é'.repeat(300) });
      }, { url: server.url, g, codec });
      await until(() => other.nodes.get('concept:from-browser'), 'the node-side client sees the browser node');
      assert.equal(other.nodes.get('concept:from-browser').content, 'é'.repeat(300));
      // A large event: compressed by the server (binary), decoded in the browser.
      await other.createNode({ id: 'concept:from-node', content: 'some text to compress '.repeat(40) });
      await page.waitForFunction(() => window.c.nodes.get('concept:from-node')?.content?.length === 880);
      other.cursor(3, 4, 'concept:from-node');
      await page.waitForFunction(() => [...window.c.presence.values()].some((p) => p.cursor?.x === 3));
      const state = await page.evaluate(async () => { const s = window.c.state; await window.c.close(); return s; });
      assert.equal(state.kind, 'connected');
      await other.close();
    }
    assert.deepEqual(errors, []);
  } finally {
    await browser.close();
    http.close();
    await server.stop(); server.cleanup();
    rmSync(dir, { recursive: true, force: true });
  }
});
