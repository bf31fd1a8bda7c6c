// Bad input from a server does not crash the client: a fake server sends a sync, then junk,
// then a good event, which the client still takes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket, { WebSocketServer } from 'ws';
import { GitmindClient } from '../../lib/dist/index.js';
import { encodeBinary } from '../../lib/dist/codec-binary.js';
import { until, CODECS } from './helpers.mjs';

const node = (id, label) => ({ id, kind: 'concept', label, content: '', x: 0, y: 0, props: {}, rev: 1, createdBy: 'eve', updatedBy: 'eve' });

for (const codec of CODECS) {
  test(`${codec}: malformed frames and messages from the server do not crash the client`, async () => {
    const wss = new WebSocketServer({ port: 0, host: '127.0.0.1', handleProtocols: (p) => [...p][0] });
    await new Promise((r) => wss.on('listening', r));
    const requests = [];
    const enc = (envs) => (codec === 'binary' ? encodeBinary(envs) : JSON.stringify(envs));
    wss.on('connection', (ws, req) => {
      requests.push(req.url);
      ws.on('message', (m, isBinary) => requests.push(isBinary ? 'binary frame' : String(m)));
      ws.send(enc([{ id: 's1', type: 'graph.sync', seq: 1, userId: 'me', sessionId: 's-me', data: { mode: 'snapshot', epoch: 'e1', seq: 1, nodes: [node('concept:a', 'A')], edges: [], presence: [], heartbeatMs: 25000 } }]));
      const junk = [
        '{not json', '"just a string"', '[1, 2, {"no":"type"}]', '{"type":"node.update","seq":"two"}',
        new Uint8Array([]), new Uint8Array([0xff, 1, 2]), new Uint8Array([1, 0x28, 0xb5, 0x2f, 0xfd, 0, 0, 0]),
        new Uint8Array([0, 16, 0, 0, 0, 255, 255, 255, 255]),
        JSON.stringify({ type: 'update.confirmed', data: { ref: 'nobody', seq: 9 } }),
        JSON.stringify({ type: 'no.such.type', data: {} }),
        JSON.stringify({ type: 'cursor.move', sessionId: 's-x', userId: 'x', data: null }),
        JSON.stringify({ type: 'user.presence', data: { status: 'active' } }),
      ];
      for (const j of junk) ws.send(j);
      // An update of a node the client does not have: it asks for a sync instead of diverging.
      ws.send(enc([{ id: 'm9', type: 'node.update', seq: 2, userId: 'eve', sessionId: 's-eve', data: { id: 'concept:zzz', set: { label: '?' }, rev: 2 } }]));
      ws.send(enc([{ id: 'g1', type: 'gonzai.discover', userId: 'gonzai', data: { event: { type: 'node.create', seq: 1, id: 'concept:a' }, relevance: 0.5, suggestion: 'hi', animation: 'wave' } }]));
      // Then a good event, which still lands.
      ws.send(enc([{ id: 'm2', type: 'node.create', seq: 2, userId: 'eve', sessionId: 's-eve', data: { node: node('concept:b', 'B'), commit: 'c' } }]));
    });
    const errors = [];
    const discovered = [];
    const c = new GitmindClient({ url: `ws://127.0.0.1:${wss.address().port}`, graph: 'g', user: 'me', codec, WebSocket });
    c.on('error', (e) => errors.push(e));
    c.on('discover', (d) => discovered.push(d));
    c.connect();
    try {
      await until(() => c.nodes.has('concept:b'), 'the good event lands after the junk');
      assert.equal(c.state.kind, 'connected');
      assert.deepEqual(discovered.map((d) => d.animation), ['wave']);
      assert.equal(c.nodes.get('concept:a').label, 'A');
      assert.ok(errors.length >= 6, `errors reported: ${JSON.stringify(errors)}`);
      await until(() => requests.some((r) => r === 'binary frame' || r.includes('graph.sync')), `a resync asked: ${requests.join(' | ')}`);
    } finally {
      await c.close();
      wss.close();
    }
  });
}
