// Changes refused `rate_limited` (transient: the server does not remember
// them, 4.4) are sent again by the client after `retryAfterMs`, and each
// lands once; with `transientRetries: 0` the refusal reaches the caller.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startServer, graphName, client, connected, until, snapshot, CODECS } from './helpers.mjs';

let server;
test.before(async () => {
  // Five changes a second per user: a burst of twelve is refused from the sixth on.
  const config = join(mkdtempSync(join(tmpdir(), 'gitmind-retry-')), 'server.toml');
  writeFileSync(config, 'mutation_rate_per_user = 5\n');
  server = await startServer({ args: ['--config', config] });
});
test.after(async () => { await server.stop(); server.cleanup(); });

const burst = (c) => Promise.all(Array.from({ length: 12 }, (_, i) => c.createNode({ id: `n:${i}` })));

for (const codec of CODECS) {
  test(`${codec}: a burst over the rate limit is sent again until every change lands, once`, async () => {
    const g = graphName('retry');
    // The tests' backoff is short (50 ms windows): enough tries for seven
    // changes to find a token among each other.
    const c = await connected(client(server, g, `user-${codec}`, codec, { transientRetries: 100 }));
    try {
      const outcomes = await burst(c);
      assert.deepEqual(outcomes.map((o) => o.kind), Array(12).fill('confirmed'));
      await until(() => c.state.pending === 0, 'nothing pending');
      // A second application would have been refused `already_exists` and moved seq past 12.
      const snap = await snapshot(server, g);
      assert.equal(snap.nodes.length, 12);
      assert.equal(snap.seq, 12);
    } finally { await c.close(); }
  });
}

test('with transientRetries 0 a rate_limited refusal reaches the caller', async () => {
  const c = await connected(client(server, graphName('retry-off'), 'impatient', 'json', { transientRetries: 0 }));
  try {
    const outcomes = await burst(c);
    assert.ok(outcomes.some((o) => o.kind === 'rolledback' && o.data.reason === 'rate_limited'), JSON.stringify(outcomes.map((o) => o.kind)));
  } finally { await c.close(); }
});
