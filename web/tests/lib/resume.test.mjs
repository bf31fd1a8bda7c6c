// A server restart in the middle of editing: the client reconnects, resumes with since and
// epoch, and its pending changes are applied once (idempotency, 4.4).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, graphName, client, connected, until, snapshot, CODECS } from './helpers.mjs';

for (const codec of CODECS) {
  test(`${codec}: server restart mid-edit: reconnect, resume with since, pending edits applied once`, async () => {
    let server = await startServer();
    const g = graphName();
    const urls = [];
    class RecordingWs extends (await import('ws')).default {
      constructor(url, p) { urls.push(url); super(url, p); }
    }
    const a = await connected(client(server, g, 'alice', codec, { WebSocket: RecordingWs }));
    const b = await connected(client(server, g, 'bob', codec));
    const states = [];
    a.on('state', (s) => states.push(s.kind));
    try {
      await a.createNode({ id: 'doc:r', content: 'ab' });
      await until(() => b.nodes.get('doc:r'), 'bob sees doc:r');
      const epoch = a.epoch;
      // An edit on its way when the server stops, and more made while it is down.
      const outcomes = [a.editContent('doc:r', 'aXb')];
      const stopping = server.stop();
      outcomes.push(a.editContent('doc:r', 'aXbY'));
      await stopping;
      await until(() => a.state.kind === 'reconnecting', 'alice is reconnecting');
      outcomes.push(a.editContent('doc:r', 'ZaXbY'));
      outcomes.push(a.createNode({ id: 'concept:offline', label: 'made offline' }));
      assert.equal(a.nodes.get('doc:r').content, 'ZaXbY', 'shown while offline');
      assert.ok(a.state.pending >= 3, `pending ${a.state.pending}`);
      assert.ok(a.state.retryAt > Date.now() - 1000);
      server = await startServer({ dataDir: server.dir, port: server.port });
      const results = await Promise.all(outcomes);
      assert.deepEqual(results.map((o) => o.kind), ['confirmed', 'confirmed', 'confirmed', 'confirmed']);
      await until(() => a.state.kind === 'connected' && a.state.pending === 0, 'alice connected again');
      const resumed = urls.slice(1).find((u) => u.includes('since='));
      assert.ok(resumed, `a reconnect with since: ${urls.join(' ')}`);
      assert.match(resumed, new RegExp(`epoch=${encodeURIComponent(epoch)}`));
      const snap = await snapshot(server, g);
      assert.equal(snap.nodes.find((n) => n.id === 'doc:r').content, 'ZaXbY', 'each edit once');
      assert.ok(snap.nodes.find((n) => n.id === 'concept:offline'));
      assert.equal(a.nodes.get('doc:r').content, 'ZaXbY');
      await until(() => b.nodes.get('doc:r')?.content === 'ZaXbY' && b.nodes.has('concept:offline'), 'bob resumed too');
      assert.ok(states.includes('reconnecting') && states.at(-1) === 'connected', states.join());
    } finally {
      await a.close(); await b.close();
      await server.stop(); server.cleanup();
    }
  });
}

for (const codec of CODECS) {
  test(`${codec}: connections dropped right after sending: every change applied exactly once`, async () => {
    const server = await startServer();
    const g = graphName();
    const a = await connected(client(server, g, 'alice', codec));
    try {
      await a.createNode({ id: 'doc:d', content: '' });
      const outcomes = [];
      let text = '';
      for (let i = 0; i < 8; i++) {
        text += String(i);
        outcomes.push(a.editContent('doc:d', text));
        outcomes.push(a.updateNode('doc:d', { label: `l${i}` }));
        await new Promise((r) => setTimeout(r, i * 3));
        a.reconnect('test drop');
        await until(() => a.state.kind === 'connected', 'reconnected');
      }
      const results = await Promise.all(outcomes);
      assert.ok(results.every((o) => o.kind === 'confirmed' || o.kind === 'resolved'), JSON.stringify(results));
      const snap = await snapshot(server, g);
      const node = snap.nodes.find((n) => n.id === 'doc:d');
      assert.equal(node.content, '01234567');
      assert.equal(node.label, 'l7');
      assert.equal(a.nodes.get('doc:d').content, '01234567');
      assert.equal(snap.seq, 1 + 16, 'one change per mutation, none twice');
    } finally { await a.close(); await server.stop(); server.cleanup(); }
  });
}
