// Codec round trips on the shared corpus (schema/corpus/): JSON -> binary -> JSON unchanged,
// compressed frames (zstd with the dictionary) read back, bad frames refused without a crash.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync, writeFileSync, mkdtempSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { join, dirname, resolve } from 'node:path';
import { tmpdir } from 'node:os';
import { fileURLToPath } from 'node:url';
import { ByteBuffer } from 'flatbuffers';
import { encodeJson, decodeJson, FrameError } from '../../lib/dist/index.js';
import { encodeBinary, decodeBinary, loadZstd } from '../../lib/dist/codec-binary.js';
import { Frame } from '../../lib/dist/fb/gitmind/v1/frame.js';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
const corpus = join(root, 'schema/corpus');
const files = readdirSync(corpus).filter((f) => f.endsWith('.json')).sort();

test('the corpus has the messages', () => assert.ok(files.length >= 50, `${files.length} files`));

for (const f of files) {
  test(`round trip ${f}`, async () => {
    const value = JSON.parse(readFileSync(join(corpus, f), 'utf8'));
    const list = Array.isArray(value) ? value : [value];
    assert.deepEqual(decodeJson(encodeJson(list)), list);
    const bin = encodeBinary(list);
    assert.equal(bin[0], 0);
    assert.deepEqual(decodeBinary(bin, undefined, (why) => assert.fail(why)), list);
    // flatc's generated accessors read the same frame.
    const frame = Frame.getRootAsFrame(new ByteBuffer(bin.subarray(1)));
    assert.equal(frame.envelopesLength(), list.length);
    list.forEach((e, i) => assert.equal(frame.envelopes(i).id(), e.id ?? null));
  });
}

test('a frame compressed with the dictionary reads back', async (t) => {
  let zstdCli = true;
  try { execFileSync('zstd', ['--version']); } catch { zstdCli = false; }
  if (!zstdCli) return t.skip('no zstd command');
  const decompress = await loadZstd();
  const value = JSON.parse(readFileSync(join(corpus, 'graph.sync.snapshot.json'), 'utf8'));
  const bin = encodeBinary([value]);
  const dir = mkdtempSync(join(tmpdir(), 'gm-zstd-'));
  writeFileSync(join(dir, 'p'), bin.subarray(1));
  execFileSync('zstd', ['-q', '-3', '--no-dictID', '-D', join(root, 'schema/dict/gitmind-v1.dict'), join(dir, 'p'), '-o', join(dir, 'p.zst')]);
  const z = readFileSync(join(dir, 'p.zst'));
  const frame = new Uint8Array(z.length + 1);
  frame[0] = 1;
  frame.set(z, 1);
  assert.ok(frame.length < bin.length, 'the dictionary makes it smaller');
  assert.deepEqual(decodeBinary(frame, decompress), [value]);
});

test('bad frames are refused, not crashes', async () => {
  const decompress = await loadZstd();
  for (const bad of [new Uint8Array([]), new Uint8Array([2, 0, 0]), new Uint8Array([1, 1, 2, 3, 4, 5, 6]), new Uint8Array([0, 255, 255, 255, 127]), new Uint8Array([1, 0x28, 0xb5, 0x2f, 0xfd, 0x20, 0x05, 1, 2])]) {
    assert.throws(() => decodeBinary(bad, decompress), FrameError);
  }
  assert.throws(() => decodeJson('{not json'), FrameError);
  const bad = [];
  assert.deepEqual(decodeJson('[1, {"type":"system.heartbeat"}]', (w) => bad.push(w)), [{ type: 'system.heartbeat' }]);
  assert.equal(bad.length, 1);
});
