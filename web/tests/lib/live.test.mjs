// The client against the real server, in both codecs: optimistic changes and rollbacks,
// concurrent text edits merged by OT, presence.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, graphName, client, connected, until, snapshot, CODECS } from './helpers.mjs';

let server;
test.before(async () => { server = await startServer(); });
test.after(async () => { await server.stop(); server.cleanup(); });

const settled = (c) => until(() => c.state.pending === 0, 'no pending change');

for (const codec of CODECS) {
  test(`${codec}: an optimistic change shows at once and is undone by its rollback`, async () => {
    const g = graphName();
    const a = await connected(client(server, g, 'alice', codec));
    const b = await connected(client(server, g, 'bob', codec));
    try {
      await a.createNode({ id: 'concept:x', label: 'first' });
      await until(() => b.nodes.get('concept:x'), 'bob sees concept:x');
      const rollbacks = [];
      b.on('rollback', (r) => rollbacks.push(r));
      const changes = [];
      b.on('change', (c) => changes.push(c));
      // bob creates what exists: shown at once, refused with already_exists, undone.
      const p = b.createNode({ id: 'concept:x', label: 'second' });
      assert.equal(b.nodes.get('concept:x').label, 'second', 'optimistic');
      assert.equal(b.state.pending, 1);
      const outcome = await p;
      assert.equal(outcome.kind, 'rolledback');
      assert.equal(outcome.data.reason, 'already_exists');
      assert.equal(b.nodes.get('concept:x').label, 'first', 'rolled back to the server state');
      assert.deepEqual(rollbacks.map((r) => r.code), ['already_exists']);
      assert.ok(changes.some((c) => c.local && c.nodes.includes('concept:x')));
      // An update of a node that never was: not_found, and nothing left of it.
      const q = b.updateNode('concept:nope', { label: 'y' });
      assert.equal((await q).data.reason, 'not_found');
      assert.equal(b.nodes.has('concept:nope'), false);
      // Changes queued behind a refused one still land.
      const r1 = b.deleteNode('concept:nope');
      const r2 = b.updateNode('concept:x', { label: 'third', props: { k: 1 } });
      assert.equal((await r1).kind, 'rolledback');
      assert.equal((await r2).kind, 'confirmed');
      await until(() => a.nodes.get('concept:x').label === 'third', 'alice sees third');
      assert.deepEqual(a.nodes.get('concept:x').props, { k: 1 });
      assert.equal(b.state.pending, 0);
    } finally { await a.close(); await b.close(); }
  });

  test(`${codec}: concurrent content edits converge through OT with no lost keystroke`, async () => {
    const g = graphName();
    const a = await connected(client(server, g, 'alice', codec));
    const b = await connected(client(server, g, 'bob', codec));
    try {
      await a.createNode({ id: 'doc:t', kind: 'document', content: 'hello world' });
      await until(() => b.nodes.get('doc:t'), 'bob sees doc:t');
      const outcomes = [];
      const typed = { a: '', b: '' };
      // Each types 40 characters at places of its own choosing, without waiting for answers;
      // bob also deletes a little now and then (only characters that were there at the start).
      for (let i = 0; i < 40; i++) {
        const ca = String.fromCharCode(97 + (i % 26));
        const ta = a.nodes.get('doc:t').content;
        const at = (i * 7) % (ta.length + 1);
        outcomes.push(a.editContent('doc:t', ta.slice(0, at) + ca + ta.slice(at)));
        typed.a += ca;
        const cb = String(i % 10);
        const tb = b.nodes.get('doc:t').content;
        const bt = tb.length - ((i * 3) % (tb.length + 1));
        outcomes.push(b.editContent('doc:t', tb.slice(0, bt) + cb + tb.slice(bt)));
        typed.b += cb;
        if (i % 5 === 0) await new Promise((r) => setTimeout(r, 5));
      }
      const results = await Promise.all(outcomes);
      assert.ok(results.every((o) => o.kind === 'confirmed' || o.kind === 'resolved'), JSON.stringify(results.filter((o) => o.kind === 'rolledback')));
      await settled(a); await settled(b);
      await until(() => a.seq === b.seq, 'same seq');
      const snap = await snapshot(server, g);
      const server_text = snap.nodes.find((n) => n.id === 'doc:t').content;
      assert.equal(a.nodes.get('doc:t').content, server_text);
      assert.equal(b.nodes.get('doc:t').content, server_text);
      const count = (s, set) => [...s].filter((c) => set.includes(c)).length;
      // Every keystroke is there: the typed letters and digits, plus those of "hello world".
      assert.equal(count(server_text, 'abcdefghijklmnopqrstuvwxyz'), typed.a.length + 'helloworld'.length);
      assert.equal(count(server_text, '0123456789'), typed.b.length);
      assert.equal(server_text.length, 'hello world'.length + 80);
    } finally { await a.close(); await b.close(); }
  });

  test(`${codec}: presence, cursors and selections are seen by the other`, async () => {
    const g = graphName();
    const a = await connected(client(server, g, 'alice', codec));
    const b = await connected(client(server, g, 'bob', codec));
    try {
      await until(() => [...a.presence.values()].some((p) => p.userId === 'bob'), 'alice sees bob join');
      a.setPresence({ status: 'away', focus: 'concept:a', displayName: 'Alice', color: '#00aaff' });
      a.cursor(1.5, -2, 'concept:a');
      a.selection(['concept:a'], []);
      const peer = () => b.presence.get(a.sessionId);
      await until(() => peer()?.status === 'away' && peer()?.cursor && peer()?.selection?.length === 1, 'bob sees alice');
      assert.deepEqual({ ...peer() }, {
        sessionId: a.sessionId, userId: 'alice', status: 'away', focus: 'concept:a', displayName: 'Alice', color: '#00aaff',
        cursor: { x: 1.5, y: -2, nodeId: 'concept:a' }, selection: ['concept:a'], selectionEdges: [],
      });
      // A later session finds them in its sync.
      const c = await connected(client(server, g, 'carol', codec));
      const seen = c.presence.get(a.sessionId);
      assert.equal(seen.status, 'away');
      assert.deepEqual(seen.cursor, { x: 1.5, y: -2, nodeId: 'concept:a' });
      assert.deepEqual(seen.selection, ['concept:a']);
      await c.close();
      await until(() => ![...a.presence.values()].some((p) => p.userId === 'carol'), 'carol leaves');
    } finally { await a.close(); await b.close(); }
  });
}

for (const codec of CODECS) {
  test(`${codec}: a change that cannot be sent is rolled back here, not resent forever`, async () => {
    const g = graphName();
    const a = await connected(client(server, g, 'alice', codec, { maxFrameBytes: 4096 }));
    try {
      const big = await a.createNode({ id: 'concept:big', label: 'x'.repeat(5000) });
      assert.equal(big.kind, 'rolledback');
      assert.equal(big.data.reason, 'too_large');
      assert.equal(a.nodes.has('concept:big'), false);
      const nan = await a.createNode({ id: 'concept:nan', x: NaN });
      // JSON writes NaN as null, which the server refuses; the binary encoder refuses it here.
      assert.equal(nan.kind, 'rolledback');
      assert.equal(nan.data.reason, 'invalid');
      assert.equal((await a.createNode({ id: 'concept:ok' })).kind, 'confirmed');
      assert.equal(a.state.pending, 0);
      a.reconnect();
      await until(() => a.state.kind === 'connected', 'reconnected');
      assert.deepEqual([...a.nodes.keys()], ['concept:ok']);
    } finally { await a.close(); }
  });
}

for (const codec of CODECS) {
  test(`${codec}: concurrent field changes: conflicts resolved, both replicas equal the server's`, async () => {
    const g = graphName();
    const a = await connected(client(server, g, 'alice', codec));
    const b = await connected(client(server, g, 'bob', codec));
    try {
      await a.createNode({ id: 'concept:c', label: 'start' });
      await b.createNode({ id: 'concept:d' });
      await until(() => b.nodes.has('concept:c') && a.nodes.has('concept:d'), 'both see both');
      await a.createEdge({ source: 'concept:c', type: 'relates-to', target: 'concept:d' });
      await until(() => b.edges.size === 1, 'bob sees the edge');
      const eid = 'concept:c -[relates-to]-> concept:d';
      const kinds = [];
      for (let i = 0; i < 10; i++) {
        const r = await Promise.all([
          a.updateNode('concept:c', { label: `a${i}`, x: i, props: { who: 'a' } }),
          b.updateNode('concept:c', { label: `b${i}`, y: i, props: { who: 'b', [`k${i}`]: i } }),
          a.updateEdge(eid, { confidence: 0.5, rationale: `a${i}` }),
          b.updateEdge(eid, { rationale: `b${i}` }),
        ]);
        kinds.push(...r.map((o) => o.kind));
      }
      assert.ok(kinds.every((k) => k === 'confirmed' || k === 'resolved'), kinds.join());
      await until(() => a.state.pending === 0 && b.state.pending === 0 && a.seq === b.seq, 'settled');
      const snap = await snapshot(server, g);
      for (const n of snap.nodes) {
        assert.deepEqual(a.nodes.get(n.id), n);
        assert.deepEqual(b.nodes.get(n.id), n);
      }
      assert.deepEqual(a.edges.get(eid), snap.edges[0]);
      assert.deepEqual(b.edges.get(eid), snap.edges[0]);
      console.log(`${codec}: outcomes ${kinds.filter((k) => k === 'resolved').length} resolved of ${kinds.length}`);
    } finally { await a.close(); await b.close(); }
  });
}
