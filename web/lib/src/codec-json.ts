/** The JSON form (docs/protocol.md 2.1): one envelope or an array of them per text frame. */
import type { Envelope } from './types.js';

export const JSON_SUBPROTOCOL = 'gitmind.v1.json';

/**
 * Encodes envelopes as one text frame: one envelope alone, several as an
 * array. Throws on a number that is not finite (JSON would write `null`).
 */
export function encodeJson(envelopes: Envelope[]): string {
  return JSON.stringify(envelopes.length === 1 ? envelopes[0] : envelopes, finite);
}

function finite(key: string, value: unknown): unknown {
  if (typeof value === 'number' && !Number.isFinite(value)) throw new TypeError(`\`${key}\` is ${value}: numbers must be finite`);
  return value;
}

/** Thrown for a frame that cannot be read at all. */
export class FrameError extends Error {}

/**
 * Decodes a text frame into its envelopes. Throws {@link FrameError} when it
 * is not JSON; entries that are not objects with a string `type` are dropped
 * (and reported through `onBad`).
 */
export function decodeJson(text: string, onBad?: (why: string) => void): Envelope[] {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    throw new FrameError(`not JSON: ${(e as Error).message}`);
  }
  const list = Array.isArray(value) ? value : [value];
  const out: Envelope[] = [];
  for (const v of list) {
    if (v && typeof v === 'object' && !Array.isArray(v) && typeof (v as Envelope).type === 'string') out.push(v as Envelope);
    else onBad?.('an envelope that is not an object with a type');
  }
  return out;
}
