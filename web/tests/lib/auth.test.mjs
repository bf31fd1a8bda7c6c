// Authentication (1.5): the token callback is asked before every connection and its token
// sent as access_token; when the token expires the server closes with 4001 and the client
// comes back with a fresh one, resuming. Also: heartbeats keep an idle session open.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac, randomBytes } from 'node:crypto';
import { writeFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startServer, graphName, client, connected, until, CODECS } from './helpers.mjs';

const b64 = (v) => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url');
function jwt(secret, claims) {
  const head = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64(claims)}`;
  return `${head}.${createHmac('sha256', secret).update(head).digest('base64url')}`;
}

for (const codec of CODECS) {
  test(`${codec}: a fresh token before every connection; an expired one ends the session, which resumes`, async () => {
    const secret = randomBytes(32).toString('hex');
    const file = join(mkdtempSync(join(tmpdir(), 'gm-secret-')), 'hs256');
    writeFileSync(file, secret);
    const server = await startServer({ args: ['--jwt-secret-file', file] });
    const g = graphName();
    let asked = 0;
    // The first token lasts 2 s; later ones an hour.
    const token = async () => {
      asked++;
      const exp = Math.floor(Date.now() / 1000) + (asked === 1 ? 2 : 3600);
      return jwt(secret, { sub: 'tok-alice', exp, graphs: { [g]: 'write' } });
    };
    const a = await connected(client(server, g, 'ignored', codec, { token }));
    const states = [];
    a.on('state', (s) => states.push(s.kind));
    try {
      assert.equal(a.userId, 'tok-alice');
      assert.equal((await a.createNode({ id: 'concept:a' })).kind, 'confirmed');
      await until(() => asked >= 2 && a.state.kind === 'connected', 'reconnected with a fresh token', 15000);
      assert.ok(states.includes('reconnecting'), states.join());
      assert.equal((await a.updateNode('concept:a', { label: 'after' })).kind, 'confirmed');
      assert.equal(a.nodes.get('concept:a').label, 'after');
      // Without a token: refused (401), and the client keeps trying, reconnecting.
      const anon = client(server, g, 'x', codec);
      anon.connect();
      await until(() => anon.state.kind === 'reconnecting', 'anonymous refused');
      await anon.close();
      assert.equal(anon.state.kind, 'offline');
    } finally { await a.close(); await server.stop(); server.cleanup(); }
  });
}

test('heartbeats keep an idle session open', async () => {
  const server = await startServer({ args: ['--heartbeat-ms', '200'] });
  const a = await connected(client(server, graphName(), 'alice', 'json'));
  const states = [];
  a.on('state', (s) => states.push(s.kind));
  try {
    assert.equal(a.heartbeatMs, 200);
    // The server closes a session silent for 2 × 200 ms + 5 s.
    await new Promise((r) => setTimeout(r, 6500));
    assert.deepEqual(states, []);
    assert.equal(a.state.kind, 'connected');
  } finally { await a.close(); await server.stop(); server.cleanup(); }
});
