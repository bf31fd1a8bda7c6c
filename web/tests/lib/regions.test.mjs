// Regions and live queries (protocol 7) through the library, against the
// real server, in both codecs: a client that gives up the region "all"
// holds what its box holds, follows enters and leaves, takes the gaps in
// `seq` without resyncing, keeps its regions over a reconnect, and gets the
// whole graph back when it takes "all" again.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, graphName, client, connected, until, CODECS } from './helpers.mjs';

const BOX = { bbox: [0, 0, 100, 100] };

for (const codec of CODECS) {
  test(`${codec}: a client with a box holds what it holds, through changes and a reconnect, and all of it again with "all"`, async () => {
    let server = await startServer();
    const g = graphName('regions');
    const a = await connected(client(server, g, 'alice', codec));
    const b = client(server, g, 'bob', codec);
    const syncs = [];
    b.on('synced', (s) => syncs.push(s));
    await connected(b);
    try {
      await Promise.all([
        a.createNode({ id: 'n:in', label: 'in', x: 10, y: 10 }),
        a.createNode({ id: 'n:leaves', label: 'leaves', x: 20, y: 20 }),
        a.createNode({ id: 'n:enters', label: 'enters', x: 500, y: 500 }),
        a.createNode({ id: 'n:far', label: 'far', x: 900, y: 900 }),
      ]);
      await until(() => b.nodes.has('n:far'), 'bob has every node');

      b.subscribeRegion('view', BOX);
      b.unsubscribeRegion('all');
      // Written after bob's subscriptions reached the server (a's own
      // messages are ordered, b's are not ordered with them): bob's
      // region is in place once it sees a change inside it.
      await a.updateNode('n:in', { label: 'in 1' });
      await until(() => b.nodes.get('n:in')?.label === 'in 1', 'bob sees a change inside the box');

      await a.updateNode('n:far', { label: 'far 1' }); // outside: not sent
      await a.moveNode('n:leaves', 300, 300);
      await a.moveNode('n:enters', 50, 50);
      await a.createNode({ id: 'n:new-out', x: 700, y: 700 });
      await a.createNode({ id: 'n:new-in', x: 60, y: 60 });
      await until(() => b.nodes.has('n:new-in'), 'bob sees a node created inside');
      await until(() => b.nodes.get('n:enters')?.x === 50 && !b.nodes.has('n:leaves'), 'enter and leave');
      assert.equal(b.nodes.has('n:new-out'), false, 'a node created outside is not sent');
      assert.equal(b.nodes.get('n:far').label, 'far', 'a change outside is not sent');
      // bob's own change inside settles although seq has gaps.
      assert.equal((await b.updateNode('n:in', { label: 'by bob' })).kind, 'confirmed');
      await until(() => a.nodes.get('n:in')?.label === 'by bob', 'alice sees bob\'s change');
      assert.equal(syncs.length, 1, 'the gaps in seq asked for no resync');

      // A reconnect: the new connection starts with "all"; the client
      // gives it up again and takes its box again.
      await server.stop();
      await until(() => b.state.kind === 'reconnecting', 'bob is reconnecting');
      server = await startServer({ dataDir: server.dir, port: server.port });
      await until(() => b.state.kind === 'connected' && syncs.length === 2, 'bob is back');
      await until(() => a.state.kind === 'connected', 'alice is back');
      await a.updateNode('n:new-in', { label: 'after' });
      await until(() => b.nodes.get('n:new-in')?.label === 'after', 'bob sees a change inside after the reconnect');
      await a.updateNode('n:far', { label: 'far 2' });
      await a.updateNode('n:new-in', { label: 'after 2' });
      await until(() => b.nodes.get('n:new-in')?.label === 'after 2', 'bob sees the next change inside');
      assert.notEqual(b.nodes.get('n:far')?.label, 'far 2', 'the box is held again: a change outside is not sent');

      // "all" again: the whole graph, and every change.
      b.subscribeRegion('all', { all: true });
      await until(() => b.nodes.get('n:far')?.label === 'far 2' && b.nodes.has('n:new-out') && b.nodes.has('n:leaves'), 'bob holds the whole graph again');
      assert.deepEqual([...b.nodes.keys()].sort(), [...a.nodes.keys()].sort());
      await a.updateNode('n:far', { label: 'far 3' });
      await until(() => b.nodes.get('n:far')?.label === 'far 3', 'bob sees changes anywhere again');
    } finally {
      await a.close(); await b.close();
      await server.stop(); server.cleanup();
    }
  });

  test(`${codec}: a live query tells its results at once and as they change`, async () => {
    const server = await startServer();
    const g = graphName('query');
    const a = await connected(client(server, g, 'alice', codec));
    try {
      await a.createNode({ id: 'pkg:one', label: 'libfoo one' });
      const results = [];
      a.on('query', (r) => results.push(r));
      a.subscribeQuery('foo', { labelContains: 'libfoo' });
      await until(() => results.length === 1, 'the first results');
      assert.deepEqual(results[0].results, ['pkg:one']);
      await a.createNode({ id: 'pkg:two', label: 'libfoo two' });
      await a.createNode({ id: 'pkg:bar', label: 'libbar' });
      await until(() => results.some((r) => r.added?.includes('pkg:two')), 'pkg:two added');
      await a.deleteNode('pkg:one');
      await until(() => results.some((r) => r.removed?.includes('pkg:one')), 'pkg:one removed');
      assert.ok(results.every((r) => !(r.added ?? []).includes('pkg:bar')), 'pkg:bar never matched');
      a.unsubscribeQuery('foo');
      const seen = results.length;
      await a.createNode({ id: 'pkg:three', label: 'libfoo three' });
      await a.updateNode('pkg:two', { label: 'libfoo two!' });
      // The first results of another query come after anything the first
      // one still had to say about the changes above (committed by now).
      a.subscribeQuery('three', { labelContains: 'three' });
      await until(() => results.some((r) => r.queryId === 'three'), 'the other query\'s results');
      assert.equal(results.filter((r) => r.queryId === 'foo').length, seen, 'no results after the unsubscribe');
    } finally {
      await a.close();
      await server.stop(); server.cleanup();
    }
  });
}
