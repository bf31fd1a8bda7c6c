// Makes the README's pictures of two people editing one graph:
// docs/img/two-browsers-alice.png and -bob.png.
//
//   node tests/perf/screenshots.mjs
//
// (The Debian picture comes from tests/perf/debian.mjs --screenshot.)

import { resolve } from "node:path";
import { Server, launchBrowser, openApp, selectNode } from "../support.mjs";

const out = resolve(import.meta.dirname, "../../../docs/img");
const server = await new Server().start();
const browser = await launchBrowser();
try {
  const viewport = { width: 1100, height: 640 };
  const alice = await openApp(browser, server, { graph: "team", user: "alice", viewport });
  const bob = await openApp(browser, server, { graph: "team", user: "bob", codec: "binary", viewport });
  await alice.evaluate(async () => {
    const client = window.gitmind.client;
    const nodes = [
      ["project:gitmind", "Gitmind", "project", 0, 0],
      ["concept:graph", "Knowledge graph", "concept", -160, 70],
      ["concept:git", "git", "concept", 170, 90],
      ["doc:protocol", "Wire protocol", "document", -120, -140],
      ["doc:architecture", "Architecture", "document", 60, -170],
      ["tool:server", "gitmind-server", "tool", 230, -60],
      ["tool:web", "The web page", "tool", -250, -40],
      ["person:alice", "Alice", "person", 20, 190],
      ["concept:gonzai", "Gonzai", "concept", 300, 130],
    ];
    await client.batch(nodes.map(([id, label, kind, x, y]) => ({ type: "node.create", data: { node: { id, label, kind, x, y } } })));
    const edges = [
      ["project:gitmind", "depends-on", "concept:git"],
      ["project:gitmind", "implements", "concept:graph"],
      ["doc:protocol", "documents", "project:gitmind"],
      ["doc:architecture", "documents", "project:gitmind"],
      ["tool:server", "implements", "doc:protocol"],
      ["tool:web", "consumed-by", "person:alice"],
      ["tool:web", "depends-on", "tool:server"],
      ["person:alice", "belongs-to", "project:gitmind"],
      ["concept:gonzai", "augments", "project:gitmind"],
    ];
    await client.batch(edges.map(([source, type, target]) => ({ type: "edge.create", data: { edge: { source, type, target } } })));
  });
  await selectNode(alice, "doc:protocol");
  await selectNode(bob, "doc:protocol");
  await alice.click("#node-content");
  await alice.keyboard.type("How clients talk to the server. ");
  await bob.click("#node-content");
  await bob.keyboard.press("End");
  await bob.keyboard.type("Both codecs: JSON and FlatBuffers.");
  await selectNode(bob, "tool:server");
  const box = await alice.locator("#graph").boundingBox();
  await alice.mouse.move(box.x + box.width * 0.62, box.y + box.height * 0.42, { steps: 5 });
  const bobBox = await bob.locator("#graph").boundingBox();
  await bob.mouse.move(bobBox.x + bobBox.width * 0.35, bobBox.y + bobBox.height * 0.6, { steps: 5 });
  // Selecting from the search zooms onto the node: show the whole graph.
  for (const page of [alice, bob]) await page.evaluate(() => window.gitmind.view.sigma.getCamera().setState({ x: 0.5, y: 0.5, ratio: 1.1 }));
  await new Promise((r) => setTimeout(r, 1000));
  await alice.screenshot({ path: `${out}/two-browsers-alice.png` });
  await bob.screenshot({ path: `${out}/two-browsers-bob.png` });
} finally {
  await browser.close();
  await server.dispose();
}
