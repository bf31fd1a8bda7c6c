// A page from another origin cannot open a session (the server checks
// Origin), while the server's own page can: a real browser, real origins.

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { Server, launchBrowser } from "../support.mjs";

let server;
let browser;
let foreign;
before(async () => {
  server = await new Server().start();
  browser = await launchBrowser();
  // Another site: a page on another port of this machine.
  foreign = createServer((_, res) => {
    res.writeHead(200, { "content-type": "text/html" });
    res.end("<!doctype html><title>elsewhere</title>");
  });
  await new Promise((resolve) => foreign.listen(0, "127.0.0.1", resolve));
});
after(async () => {
  await browser?.close();
  await server?.dispose();
  foreign?.close();
});

/** Tries a WebSocket to the server from `page`: "open" or "refused". */
function tryWebSocket(page, port) {
  return page.evaluate(
    (port) =>
      new Promise((resolve) => {
        const ws = new WebSocket(`ws://127.0.0.1:${port}/v1/graphs/origin-test?user=mallory`, "gitmind.v1.json");
        ws.onopen = () => {
          ws.close();
          resolve("open");
        };
        ws.onerror = () => resolve("refused");
      }),
    port,
  );
}

test("a page of another origin is refused, the server's own page is not", async () => {
  const page = await browser.newPage();
  await page.goto(`http://127.0.0.1:${foreign.address().port}/`);
  assert.equal(await tryWebSocket(page, server.port), "refused");

  await page.goto(`${server.url}/?graph=origin-test&user=alice`);
  assert.equal(await tryWebSocket(page, server.port), "open");
  await page.close();
});
