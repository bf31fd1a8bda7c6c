import type { Codec } from './client.js';
export async function binaryCodec(): Promise<Codec> { throw new Error('binary codec: not yet'); }
