// Syncs split into chunks (6): a snapshot of a graph over 256 KB, and a delta over 256 KB
// after a client was away, in both codecs.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, graphName, client, connected, until, snapshot, CODECS } from './helpers.mjs';

const filler = 'lorem ipsum dolor sit amet '.repeat(8);

for (const codec of CODECS) {
  test(`${codec}: chunked snapshot and chunked delta`, async () => {
    const server = await startServer();
    const g = graphName();
    const a = await connected(client(server, g, 'alice', codec));
    try {
      const ops = (from, n) => Array.from({ length: n }, (_, i) => ({ type: 'node.create', data: { node: { id: `concept:n${from + i}`, content: filler, x: i, y: i * 2 } } }));
      for (let k = 0; k < 3; k++) assert.equal((await a.batch(ops(k * 500, 500))).kind, 'confirmed');
      const chunks = [];
      const b = client(server, g, 'bob', codec);
      b.on('message', (e) => { if (e.type === 'graph.sync') chunks.push(e.data.chunk); });
      await connected(b);
      assert.ok(chunks.length > 1 && chunks[0].count === chunks.length, `a chunked snapshot: ${JSON.stringify(chunks)}`);
      assert.equal(b.nodes.size, 1500);
      assert.equal(b.nodes.get('concept:n1499').content, filler);
      // bob goes away; alice changes more than 256 KB; bob comes back with since.
      await b.close();
      for (let k = 0; k < 3; k++) {
        const upd = Array.from({ length: 500 }, (_, i) => ({ type: 'node.update', data: { id: `concept:n${k * 500 + i}`, set: { label: `v${k}`, content: filler.toUpperCase() } } }));
        assert.equal((await a.batch(upd)).kind, 'confirmed');
      }
      chunks.length = 0;
      const modes = [];
      b.on('synced', (s) => modes.push(s.mode));
      b.connect();
      await until(() => modes.length > 0, 'bob resynced');
      assert.deepEqual(modes, ['delta']);
      assert.ok(chunks.length > 1, `a chunked delta: ${JSON.stringify(chunks)}`);
      assert.equal(b.seq, a.seq);
      const snap = await snapshot(server, g);
      for (const n of snap.nodes) assert.deepEqual(b.nodes.get(n.id), n);
      await b.close();
    } finally { await a.close(); await server.stop(); server.cleanup(); }
  });
}
