import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, graphName, client, connected, until } from './helpers.mjs';

test('smoke', async () => {
  const s = await startServer();
  const g = graphName();
  const a = await connected(client(s, g, 'alice', 'json'));
  const b = await connected(client(s, g, 'bob', 'json'));
  const o = await a.createNode({ id: 'concept:a', label: 'A' });
  assert.equal(o.kind, 'confirmed');
  await until(() => b.nodes.get('concept:a'), 'bob sees it');
  assert.equal(b.nodes.get('concept:a').label, 'A');
  await a.close(); await b.close(); await s.stop(); s.cleanup();
});
