import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, graphName, client, connected, until, CODECS } from './helpers.mjs';

for (const codec of CODECS) {
  test(`${codec}: two clients see each other's nodes and edges`, async () => {
    const s = await startServer();
    try {
      const g = graphName();
      const a = await connected(client(s, g, 'alice', codec));
      const b = await connected(client(s, g, 'bob', codec));
      assert.equal(a.userId, 'alice');
      assert.ok(a.sessionId);
      const o = await a.createNode({ id: 'concept:a', label: 'A', content: 'x'.repeat(200) });
      assert.equal(o.kind, 'confirmed');
      await b.createNode({ id: 'concept:b', label: 'B' });
      await until(() => b.nodes.get('concept:a') && a.nodes.get('concept:b'), 'both see both');
      assert.equal(b.nodes.get('concept:a').label, 'A');
      assert.equal(b.nodes.get('concept:a').content.length, 200);
      const e = await a.createEdge({ source: 'concept:a', type: 'relates-to', target: 'concept:b' });
      assert.equal(e.kind, 'confirmed');
      await until(() => b.edges.get('concept:a -[relates-to]-> concept:b'), 'bob sees the edge');
      await b.deleteNode('concept:b');
      await until(() => !a.nodes.has('concept:b') && a.edges.size === 0, 'alice sees the delete and its edge gone');
      // Messages the client keeps nothing for (section 7) go out with
      // sendRaw and come back through the `message` event.
      const syncs = [];
      a.on('message', (m) => { if (m.type === 'region.sync') syncs.push(m.data); });
      assert.equal(a.sendRaw('region.subscribe', { regionId: 'view', filter: { bbox: [-1, -1, 1, 1] } }), true);
      await until(() => syncs.length > 0, 'an answer to region.subscribe');
      assert.equal(syncs[0].regionId, 'view');
      assert.deepEqual(syncs[0].nodes.map((n) => n.id), ['concept:a']);
      await a.close(); await b.close();
    } finally { await s.stop(); s.cleanup(); }
  });
}
