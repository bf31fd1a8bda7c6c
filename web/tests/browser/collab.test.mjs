// Two people on one graph, in two browsers, in each codec: they see each
// other's nodes, cursors, selections and text as they type.

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { serverAndBrowser, openApp, selectNode, until, codecs } from "../support.mjs";

const env = serverAndBrowser();

for (const codec of codecs) {
  describe(`two browsers, ${codec}`, () => {
    const graph = `collab-${codec}`;
    let alice;
    let bob;
    let id;

    before(async () => {
      alice = await openApp(env.browser, env.server, { graph, user: "alice", codec });
      bob = await openApp(env.browser, env.server, { graph, user: "bob", codec });
    });
    after(async () => {
      assert.deepEqual(alice.errors, [], "alice's page logged errors");
      assert.deepEqual(bob.errors, [], "bob's page logged errors");
      await alice.context().close();
      await bob.context().close();
    });

    test("each sees the other in the presence list", async () => {
      await until(alice, () => document.querySelector('#people li[data-user="bob"]'));
      await until(bob, () => document.querySelector('#people li[data-user="alice"]'));
    });

    test("a node created with the keyboard appears in the other browser", async () => {
      await alice.focus("#graph");
      await alice.keyboard.press("n");
      await alice.waitForFunction(() => document.activeElement?.id === "node-label");
      await alice.keyboard.type("Alpha");
      await alice.keyboard.press("Enter");
      id = await alice.evaluate(() => window.gitmind.view.selected);
      assert.match(id, /^note:/);
      await until(bob, (id) => window.gitmind.view.graph.hasNode(id) && window.gitmind.client.nodes.get(id)?.label === "Alpha", id);
      const label = await bob.evaluate((id) => window.gitmind.view.graph.getNodeAttribute(id, "label"), id);
      assert.equal(label, "Alpha");
    });

    test("a node moved in one browser is drawn, and can be clicked, where it now is in the other", async () => {
      // Moves are repainted without sigma's full pass (web/app/src/view.ts):
      // what is drawn, and what a click finds, must still follow them.
      const to = await alice.evaluate(async (id) => {
        const { x, y } = window.gitmind.client.nodes.get(id);
        const to = { x: (x ?? 0) + 40, y: (y ?? 0) - 30 };
        await window.gitmind.client.updateNode(id, to);
        return to;
      }, id);
      await until(bob, ([id, to]) => window.gitmind.view.graph.getNodeAttribute(id, "x") === to.x, [id, to]);
      await bob.keyboard.press("Escape");
      const box = await bob.locator("#graph").boundingBox();
      for (let tries = 0; ; tries++) {
        const at = await bob.evaluate((to) => window.gitmind.view.sigma.graphToViewport(to), to);
        await bob.mouse.click(box.x + at.x, box.y + at.y);
        if ((await bob.evaluate(() => window.gitmind.view.selected)) === id) break;
        assert.ok(tries < 20, `a click where ${id} was moved to did not find it`);
        await bob.waitForTimeout(100);
      }
      await bob.keyboard.press("Escape");
      await until(bob, () => window.gitmind.view.selected === null);
    });

    test("a cursor moved over the graph is drawn, with its name, in the other browser", async () => {
      const box = await alice.locator("#graph").boundingBox();
      await alice.mouse.move(box.x + box.width / 3, box.y + box.height / 3);
      await alice.mouse.move(box.x + box.width / 2, box.y + box.height / 2, { steps: 5 });
      const cursor = bob.locator('.cursor[data-user="alice"]');
      await cursor.waitFor({ state: "attached" });
      assert.equal(await cursor.locator("span").textContent(), "alice");
    });

    test("a selection is shown in the selecting person's colour", async () => {
      await selectNode(alice, id);
      const color = await bob.evaluate(() => [...window.gitmind.client.presence.values()].find((p) => p.userId === "alice").color);
      assert.ok(color, "alice announced a colour");
      await until(bob, ([id, color]) => window.gitmind.view.sigma.getNodeDisplayData(id)?.color === color, [id, color]);
    });

    test("text typed at the same time in both browsers merges without losing a keystroke", async () => {
      await selectNode(bob, id);
      await alice.click("#node-content");
      await bob.click("#node-content");
      const a = "the quick brown fox ";
      const b = "jumps over the lazy dog";
      // Interleaved keystrokes: each types while the other's arrive.
      for (let i = 0; i < Math.max(a.length, b.length); i++) {
        if (i < a.length) await alice.keyboard.type(a[i]);
        if (i < b.length) await bob.keyboard.type(b[i]);
      }
      const same = (page) => page.evaluate(() => document.getElementById("node-content").value);
      await until(alice, () => window.gitmind.client.state.pending === 0);
      await until(bob, () => window.gitmind.client.state.pending === 0);
      let text;
      for (let tries = 0; tries < 100; tries++) {
        const [x, y] = [await same(alice), await same(bob)];
        if (x === y && x.length === a.length + b.length) {
          text = x;
          break;
        }
        await new Promise((r) => setTimeout(r, 100));
      }
      assert.ok(text, `the two texts did not converge: ${JSON.stringify(await same(alice))} / ${JSON.stringify(await same(bob))}`);
      // Every keystroke of each is there, in each one's order.
      assert.ok(isSubsequence(a, text) && isSubsequence(b, text), `a keystroke is missing or out of order: ${JSON.stringify(text)}`);
      const snapshot = await env.server.snapshot(graph);
      assert.equal(snapshot.nodes.find((n) => n.id === id).content, text);
    });

    test("a node deleted in one browser leaves the other", async () => {
      await alice.focus("#graph");
      await alice.keyboard.press("Delete");
      await until(bob, (id) => !window.gitmind.view.graph.hasNode(id), id);
      await until(bob, () => document.getElementById("editor").hidden);
    });
  });
}

/** Whether the characters of `part` appear in `whole` in order. */
function isSubsequence(part, whole) {
  let at = 0;
  for (const ch of whole) if (ch === part[at]) at++;
  return at === part.length;
}
