/**
 * Reconnect delays: full jitter, a random delay up to base × 2^attempt,
 * capped, on top of what the server asked for (`system.reconnect`'s
 * `retryAfterMs`, docs/protocol.md 10.3). The port of `client/src/backoff.rs`.
 */
export interface Backoff {
  /** The first window, ms (250). */
  baseMs: number;
  /** The largest window, ms (30,000). */
  capMs: number;
  /** Random delay within the window (true), or the whole window. */
  jitter: boolean;
}

export const DEFAULT_BACKOFF: Backoff = { baseMs: 250, capMs: 30_000, jitter: true };

/** The window of attempt `attempt` (0-based): base × 2^attempt, capped. */
export function backoffWindow(b: Backoff, attempt: number): number {
  return Math.min(b.baseMs * 2 ** Math.min(attempt, 31), b.capMs);
}

/** The delay before attempt `attempt`, ms: the server's floor plus the jittered window. */
export function backoffDelay(b: Backoff, attempt: number, serverAskedMs = 0, random: () => number = Math.random): number {
  const w = backoffWindow(b, attempt);
  return serverAskedMs + (b.jitter ? w * random() : w);
}
