// The page through a server restart: it says it is reconnecting, keeps an
// edit made meanwhile as pending, and sends it once the server is back,
// without the layout jumping.

import { test } from "node:test";
import assert from "node:assert/strict";
import { serverAndBrowser, openApp, selectNode, until, waitConnected, codecs } from "../support.mjs";

const env = serverAndBrowser();

for (const codec of codecs) {
  test(`a server restart loses no pending edit (${codec})`, async () => {
    const graph = `restart-${codec}`;
    const page = await openApp(env.browser, env.server, { graph, user: "carol", codec });
    const id = "concept:restart";
    await page.evaluate((id) => window.gitmind.client.createNode({ id, label: "Restart", content: "before" }), id);
    await selectNode(page, id);
    const layoutBefore = await page.evaluate(() => JSON.stringify(["#graph", "aside", "#status"].map((s) => document.querySelector(s).getBoundingClientRect())));

    await env.server.stop();
    await until(page, () => /^reconnecting in \d+ s/.test(document.getElementById("status-text").textContent));
    await page.click("#node-content");
    await page.keyboard.press("End");
    await page.keyboard.type(" and after");
    await until(page, () => /1 pending change/.test(document.getElementById("status-text").textContent) || /pending change/.test(document.getElementById("status-text").textContent));
    assert.equal(await page.inputValue("#node-content"), "before and after");

    await env.server.start();
    await waitConnected(page, 30_000);
    assert.equal(await page.locator("#status").getAttribute("data-state"), "connected");
    const snapshot = await env.server.snapshot(graph);
    assert.equal(snapshot.nodes.find((n) => n.id === id).content, "before and after");
    assert.equal(await page.inputValue("#node-content"), "before and after");
    const layoutAfter = await page.evaluate(() => JSON.stringify(["#graph", "aside", "#status"].map((s) => document.querySelector(s).getBoundingClientRect())));
    assert.equal(layoutAfter, layoutBefore, "the layout moved on reconnect");
    assert.deepEqual(page.errors.filter((e) => !/WebSocket/.test(e.message)), []);
    await page.context().close();
  });
}
