// The OT functions and the replica without a server: transform, compose, invert and diff
// on random operations (code points, not UTF-16 units), backoff windows.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ot, Replica, backoffWindow, backoffDelay } from '../../lib/dist/index.js';

let seed = 42;
const rand = (n) => { seed = (seed * 1103515245 + 12345) & 0x7fffffff; return seed % n; };
const ALPHABET = ['a', 'b', 'é', '🐵', 'x', '\n'];
const randText = (n) => Array.from({ length: n }, () => ALPHABET[rand(ALPHABET.length)]).join('');
function randOp(text) {
  const len = ot.cpLen(text);
  const b = new ot.OpBuilder();
  let left = len;
  while (left > 0) {
    const k = rand(3);
    const n = 1 + rand(Math.min(left, 4));
    if (k === 0) { b.retain(n); left -= n; } else if (k === 1) { b.delete(n); left -= n; } else b.insert(randText(1 + rand(3)));
  }
  if (rand(2)) b.insert(randText(1 + rand(2)));
  return b.ops;
}

test('transformPair converges: a then b\' equals b then a\'', () => {
  for (let i = 0; i < 2000; i++) {
    const s = randText(rand(12));
    const a = randOp(s);
    const b = randOp(s);
    const [a2, b2] = ot.transformPair(a, b);
    assert.equal(ot.apply(b2, ot.apply(a, s)), ot.apply(a2, ot.apply(b, s)), JSON.stringify({ s, a, b }));
  }
});

test('compose and invert agree with apply', () => {
  for (let i = 0; i < 2000; i++) {
    const s = randText(rand(12));
    const a = randOp(s);
    const m = ot.apply(a, s);
    const b = randOp(m);
    assert.equal(ot.apply(ot.compose(a, b), s), ot.apply(b, m));
    assert.equal(ot.apply(ot.invert(a, s), m), s);
  }
});

test('diff makes the smallest canonical op, counting code points', () => {
  assert.deepEqual(ot.diff('hello', 'hello'), [5]);
  assert.deepEqual(ot.diff('', 'x'), ['x']);
  assert.deepEqual(ot.diff('a🐵b', 'a🐵xb'), [2, 'x', 1]);
  assert.deepEqual(ot.diff('abcdef', 'abXef'), [2, 'X', -2, 2]);
  for (let i = 0; i < 500; i++) {
    const s = randText(rand(10));
    const t = randText(rand(10));
    assert.equal(ot.apply(ot.diff(s, t), s), t);
  }
  assert.throws(() => ot.apply([3], 'ab'), ot.OtError);
  assert.equal(ot.transformIndex([2, 'xy', -1, 1], 3), 4);
});

test('a caret keeps its place in text changed by someone else, in UTF-16 offsets', () => {
  // Before the change it stays; after it, it follows; inside it, it goes
  // to the end of the new text.
  assert.equal(ot.shiftCaret('hello world', 'hello big world', 3), 3);
  assert.equal(ot.shiftCaret('hello world', 'hello big world', 8), 12);
  assert.equal(ot.shiftCaret('hello world', 'hello there', 8), 11);
  // An emoji is two UTF-16 units and one code point (the protocol's unit).
  assert.equal(ot.shiftCaret('a😀b', 'xa😀b', 3), 4);
  assert.equal(ot.shiftCaret('a😀b', 'a😀😀b', 4), 6);
});

test('the server example of 4.2: both insert as of seq 1', () => {
  // alice ["x",2] first in server order; bob [2,"y"] becomes [3,"y"].
  assert.deepEqual(ot.transformPair(['x', 2], [2, 'y'])[1], [3, 'y']);
});

test('replica: pending text edits are rebased over remote ones and settle to the server text', () => {
  const r = new Replica();
  r.userId = 'me';
  r.applySync({ mode: 'snapshot', epoch: 'e', seq: 1, nodes: [{ id: 'c:a', content: 'hello' }], edges: [] });
  const sent = r.localMutation('m1', { type: 'node.update', data: { id: 'c:a', text: { content: [5, '!'] } } });
  assert.equal(sent.data.baseSeq, 1);
  // A second edit waits behind the first (one text edit in flight per node).
  assert.equal(r.localMutation('m2', { type: 'node.update', data: { id: 'c:a', text: { content: [6, '?'] } } }), undefined);
  assert.equal(r.node('c:a').content, 'hello!?');
  // Someone inserts at the start, first in server order.
  r.applyEvent({ id: 'x', type: 'node.update', seq: 2, userId: 'you', data: { id: 'c:a', text: { content: ['>', 5] }, rev: 2 } });
  assert.equal(r.node('c:a').content, '>hello!?');
  // m1 is confirmed as the server transformed it; m2 goes out rebased.
  const out = r.settle({ type: 'update.confirmed', seq: 3, data: { ref: 'm1', seq: 3, commit: 'c', rev: 3, text: { content: [6, '!'] } } });
  assert.deepEqual(out.map((e) => [e.id, e.data.baseSeq, e.data.text.content]), [['m2', 3, [7, '?']]]);
  r.settle({ type: 'update.rollback', data: { ref: 'm2', reason: 'invalid' } });
  assert.equal(r.node('c:a').content, '>hello!');
  assert.equal(r.pendingCount, 0);
});

test('backoff: windows double up to the cap; delays stay within them above the server floor', () => {
  const b = { baseMs: 100, capMs: 1000, jitter: false };
  assert.deepEqual([0, 1, 2, 3, 4, 5].map((a) => backoffWindow(b, a)), [100, 200, 400, 800, 1000, 1000]);
  assert.equal(backoffWindow(b, 5000), 1000);
  const j = { baseMs: 250, capMs: 30000, jitter: true };
  for (let a = 0; a < 20; a++) {
    const d = backoffDelay(j, a, 500);
    assert.ok(d >= 500 && d <= 500 + backoffWindow(j, a));
  }
});

test('editContent with baseText merges an edit made on an older text', async () => {
  const { GitmindClient } = await import('../../lib/dist/index.js');
  const c = new GitmindClient({ url: 'ws://127.0.0.1:1', graph: 'g' });
  // No connection: the change stays pending and shows at once.
  const r = c['replica'];
  r.applySync({ mode: 'snapshot', epoch: 'e', seq: 1, nodes: [{ id: 'c:a', content: 'Xhello' }], edges: [] });
  // The editor still shows "hello" (the remote "X" not yet shown) and the user typed "!".
  c.editContent('c:a', 'hello!', 'hello');
  assert.equal(c.nodes.get('c:a').content, 'Xhello!');
  c.editContent('c:a', 'Xhello!?');
  assert.equal(c.nodes.get('c:a').content, 'Xhello!?');
  await c.close().catch(() => {});
});
