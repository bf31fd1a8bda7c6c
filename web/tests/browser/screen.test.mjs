// The page subscribes to what is on screen (protocol 7): with `?screen=1`
// it holds the region it shows, with a margin, and is not sent changes
// elsewhere; a node moved out of view leaves it. In each codec.

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { serverAndBrowser, openApp, until, codecs } from "../support.mjs";

const env = serverAndBrowser();

for (const codec of codecs) {
  describe(`the page follows the screen, ${codec}`, () => {
    const graph = `screen-${codec}`;
    let alice;
    let bob;

    before(async () => {
      alice = await openApp(env.browser, env.server, { graph, user: "alice", codec });
      await alice.evaluate(() =>
        Promise.all(
          [["n:a", 0, 0], ["n:b", 100, 0], ["n:c", 0, 100], ["n:d", 100, 100]].map(([id, x, y]) =>
            window.gitmind.client.createNode({ id, label: id, x, y }),
          ),
        ),
      );
      bob = await openApp(env.browser, env.server, { graph, user: "bob", codec, query: "&screen=1" });
      await until(bob, () => document.getElementById("scope").textContent === "Live: what is on screen");
    });
    after(async () => {
      assert.deepEqual(alice.errors, [], "alice's page logged errors");
      assert.deepEqual(bob.errors, [], "bob's page logged errors");
      await alice.context().close();
      await bob.context().close();
    });

    test("a node created on screen arrives, one created far off does not", async () => {
      // Where bob's screen is, in graph coordinates.
      const [x0, y0, x1, y1] = await bob.evaluate(() => {
        const { sigma } = window.gitmind.view;
        const { width, height } = sigma.getDimensions();
        const a = sigma.viewportToGraph({ x: 0, y: 0 });
        const b = sigma.viewportToGraph({ x: width, y: height });
        return [Math.min(a.x, b.x), Math.min(a.y, b.y), Math.max(a.x, b.x), Math.max(a.y, b.y)];
      });
      const far = { x: x1 + 20 * (x1 - x0), y: y1 + 20 * (y1 - y0) };
      const near = { x: (x0 + x1) / 2, y: (y0 + y1) / 2 };
      await alice.evaluate(
        async ([far, near]) => {
          await window.gitmind.client.createNode({ id: "n:far", label: "far", ...far });
          await window.gitmind.client.createNode({ id: "n:near", label: "near", ...near });
        },
        [far, near],
      );
      // In one graph's order: had n:far been sent, it came before n:near.
      await until(bob, () => window.gitmind.view.graph.hasNode("n:near"));
      assert.equal(await bob.evaluate(() => window.gitmind.client.nodes.has("n:far")), false);
      await until(alice, () => window.gitmind.view.graph.hasNode("n:far"));
    });

    test("a node moved far off leaves the page, and one moved on screen comes back", async () => {
      const far = await alice.evaluate(() => window.gitmind.client.nodes.get("n:far"));
      await alice.evaluate(([x, y]) => window.gitmind.client.moveNode("n:a", x, y), [far.x, far.y]);
      await until(bob, () => !window.gitmind.client.nodes.has("n:a") && !window.gitmind.view.graph.hasNode("n:a"));
      await alice.evaluate(() => window.gitmind.client.moveNode("n:far", 50, 50));
      await until(bob, () => window.gitmind.view.graph.hasNode("n:far") && window.gitmind.view.graph.getNodeAttribute("n:far", "x") === 50);
      // The server refused nothing the page sent (refusals are toasts).
      assert.equal(await bob.locator("#gonzai > *").count(), 0);
    });
  });
}
