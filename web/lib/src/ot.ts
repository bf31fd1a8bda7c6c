/**
 * Text operations on a node's `content` (docs/protocol.md 4.2), the port of
 * `schema/src/ot.rs`.
 *
 * An operation is the wire form itself: an array of components applied from
 * the start of the text, a positive integer retains that many characters, a
 * negative one deletes that many, a non-empty string inserts it. Characters
 * are Unicode scalar values (code points), not UTF-16 units.
 */

/** One component: retain n (> 0), delete n (< 0 as -n), or insert a string. */
export type Component = number | string;
/** A text operation in canonical form (see {@link OpBuilder}). */
export type TextOp = Component[];

/** The number of code points of `s`. */
export function cpLen(s: string): number {
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length) {
      const d = s.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) i++;
    }
    n++;
  }
  return n;
}

/** The UTF-16 index of code point `k` of `s` (or s.length). */
function cpIndex(s: string, from: number, k: number): number {
  let i = from;
  while (k > 0 && i < s.length) {
    const c = s.charCodeAt(i);
    i += c >= 0xd800 && c <= 0xdbff && i + 1 < s.length && (s.charCodeAt(i + 1) & 0xfc00) === 0xdc00 ? 2 : 1;
    k--;
  }
  return k > 0 ? -1 : i;
}

/** Thrown when an operation does not fit a text or another operation. */
export class OtError extends Error {}

/** Builds operations in canonical form: adjacent components of one kind merged, an insert before a delete at the same place. */
export class OpBuilder {
  readonly ops: TextOp = [];
  retain(n: number): this {
    if (n <= 0) return this;
    const last = this.ops.length - 1;
    if (last >= 0 && typeof this.ops[last] === 'number' && (this.ops[last] as number) > 0) (this.ops[last] as number) += n;
    else this.ops.push(n);
    return this;
  }
  insert(s: string): this {
    if (s === '') return this;
    const o = this.ops;
    const last = o.length - 1;
    if (last >= 0 && typeof o[last] === 'string') o[last] = (o[last] as string) + s;
    else if (last >= 0 && typeof o[last] === 'number' && (o[last] as number) < 0) {
      if (last >= 1 && typeof o[last - 1] === 'string') o[last - 1] = (o[last - 1] as string) + s;
      else o.splice(last, 0, s);
    } else o.push(s);
    return this;
  }
  delete(n: number): this {
    if (n <= 0) return this;
    const last = this.ops.length - 1;
    if (last >= 0 && typeof this.ops[last] === 'number' && (this.ops[last] as number) < 0) (this.ops[last] as number) -= n;
    else this.ops.push(-n);
    return this;
  }
}

/** The length of the text the operation applies to. */
export function baseLen(op: TextOp): number {
  let n = 0;
  for (const c of op) if (typeof c === 'number') n += Math.abs(c);
  return n;
}

/** The length of the text the operation makes. */
export function targetLen(op: TextOp): number {
  let n = 0;
  for (const c of op) n += typeof c === 'string' ? cpLen(c) : c > 0 ? c : 0;
  return n;
}

/** Whether the operation changes nothing. */
export function isNoop(op: TextOp): boolean {
  return op.every((c) => typeof c === 'number' && c > 0);
}

/** Whether `op` is a well-formed operation (no empty or non-integral component). */
export function isValid(op: unknown): op is TextOp {
  return Array.isArray(op) && op.every((c) => (typeof c === 'string' && c !== '') || (typeof c === 'number' && Number.isInteger(c) && c !== 0));
}

/** Applies `op` to `text`. Throws {@link OtError} when it does not fit. */
export function apply(op: TextOp, text: string): string {
  let out = '';
  let pos = 0;
  for (const c of op) {
    if (typeof c === 'string') out += c;
    else {
      const end = cpIndex(text, pos, Math.abs(c));
      if (end < 0) throw new OtError(`text operation for ${baseLen(op)} characters applied to ${cpLen(text)}`);
      if (c > 0) out += text.slice(pos, end);
      pos = end;
    }
  }
  if (pos !== text.length) throw new OtError(`text operation for ${baseLen(op)} characters applied to ${cpLen(text)}`);
  return out;
}

type Piece = { k: 'r' | 'd'; n: number } | { k: 'i'; s: string; n: number };

class Pieces {
  private i = 0;
  constructor(private readonly op: TextOp) {}
  next(): Piece | undefined {
    const c = this.op[this.i++];
    if (c === undefined) return undefined;
    if (typeof c === 'string') return { k: 'i', s: c, n: cpLen(c) };
    return c > 0 ? { k: 'r', n: c } : { k: 'd', n: -c };
  }
  consume(p: Piece, m: number): Piece | undefined {
    if (p.n > m) {
      if (p.k === 'i') return { k: 'i', s: p.s.slice(cpIndex(p.s, 0, m)), n: p.n - m };
      return { k: p.k, n: p.n - m };
    }
    return this.next();
  }
}

/** `a` then `b` as one operation. */
export function compose(a: TextOp, b: TextOp): TextOp {
  if (targetLen(a) !== baseLen(b)) throw new OtError('compose: length mismatch');
  const out = new OpBuilder();
  const ia = new Pieces(a);
  const ib = new Pieces(b);
  let pa = ia.next();
  let pb = ib.next();
  for (;;) {
    if (!pa && !pb) break;
    if (pa && pa.k === 'd') { out.delete(pa.n); pa = ia.next(); continue; }
    if (pb && pb.k === 'i') { out.insert(pb.s); pb = ib.next(); continue; }
    if (!pa || !pb) throw new OtError('compose: length mismatch');
    const m = Math.min(pa.n, pb.n);
    if (pa.k === 'r' && pb.k === 'r') out.retain(m);
    else if (pa.k === 'r' && pb.k === 'd') out.delete(m);
    else if (pa.k === 'i' && pb.k === 'r') out.insert(m === pa.n ? pa.s : pa.s.slice(0, cpIndex(pa.s, 0, m)));
    pa = ia.consume(pa, m);
    pb = ib.consume(pb, m);
  }
  return out.ops;
}

/**
 * Transforms two operations made on the same text: returns `[a', b']` with
 * `a` then `b'` equal to `b` then `a'`. At equal positions `a`'s insert goes
 * first: pass the operation that came first in server order as `a`.
 */
export function transformPair(a: TextOp, b: TextOp): [TextOp, TextOp] {
  if (baseLen(a) !== baseLen(b)) throw new OtError(`transform: operations for ${baseLen(a)} and ${baseLen(b)} characters`);
  const a2 = new OpBuilder();
  const b2 = new OpBuilder();
  const ia = new Pieces(a);
  const ib = new Pieces(b);
  let pa = ia.next();
  let pb = ib.next();
  for (;;) {
    if (!pa && !pb) break;
    if (pa && pa.k === 'i') { a2.insert(pa.s); b2.retain(pa.n); pa = ia.next(); continue; }
    if (pb && pb.k === 'i') { a2.retain(pb.n); b2.insert(pb.s); pb = ib.next(); continue; }
    if (!pa || !pb) throw new OtError('transform: length mismatch');
    const m = Math.min(pa.n, pb.n);
    if (pa.k === 'r' && pb.k === 'r') { a2.retain(m); b2.retain(m); }
    else if (pa.k === 'd' && pb.k === 'r') a2.delete(m);
    else if (pa.k === 'r' && pb.k === 'd') b2.delete(m);
    pa = ia.consume(pa, m);
    pb = ib.consume(pb, m);
  }
  return [a2.ops, b2.ops];
}

/** The operation that undoes `op` applied to `before`. */
export function invert(op: TextOp, before: string): TextOp {
  const inv = new OpBuilder();
  let pos = 0;
  for (const c of op) {
    if (typeof c === 'string') inv.delete(cpLen(c));
    else if (c > 0) { inv.retain(c); pos = cpIndex(before, pos, c); }
    else {
      const end = cpIndex(before, pos, -c);
      if (end < 0) throw new OtError('invert: does not fit');
      inv.insert(before.slice(pos, end));
      pos = end;
    }
    if (pos < 0) throw new OtError('invert: does not fit');
  }
  if (pos !== before.length) throw new OtError('invert: does not fit');
  return inv.ops;
}

/**
 * The smallest operation turning `from` into `to`: common prefix and suffix
 * kept, the middle replaced. Enough for typing, pasting and deleting a
 * selection, which is what an editor reports between two keystrokes.
 */
export function diff(from: string, to: string): TextOp {
  const a = Array.from(from);
  const b = Array.from(to);
  let p = 0;
  while (p < a.length && p < b.length && a[p] === b[p]) p++;
  let s = 0;
  while (s < a.length - p && s < b.length - p && a[a.length - 1 - s] === b[b.length - 1 - s]) s++;
  return new OpBuilder()
    .retain(p)
    .insert(b.slice(p, b.length - s).join(''))
    .delete(a.length - p - s)
    .retain(s).ops;
}

/** Where position `index` of the text goes once `op` is applied (for carets). */
export function transformIndex(op: TextOp, index: number, afterInserts = false): number {
  let pos = 0;
  let result = index;
  for (const c of op) {
    if (pos > index) break;
    if (typeof c === 'string') {
      if (pos < index || afterInserts) result += cpLen(c);
    } else if (c > 0) pos += c;
    else {
      result -= Math.min(-c, index - pos);
      pos += -c;
    }
  }
  return result;
}

/**
 * Where a caret at UTF-16 offset `at` of `before` (what editors report)
 * belongs in `after`, when `after` came from `before` by one edit: before
 * the edit it stays, after it it follows the text, inside a replaced span
 * it goes to the end of the new text.
 */
export function shiftCaret(before: string, after: string, at: number): number {
  const moved = transformIndex(diff(before, after), cpLen(before.slice(0, at)));
  return Array.from(after).slice(0, moved).join('').length;
}
