/**
 * Gitmind live's client library for browsers and Node: see README.md.
 * `GitmindClient` is the entry point; the rest is for those who need the parts.
 */
export { GitmindClient, ClientClosedError } from './client.js';
export type {
  ClientOptions, ClientState, ConnectionKind, Peer, Outcome, ChangeEvent, RollbackEvent, PresenceEvent,
  SyncedEvent, ClientEvents, Codec,
} from './client.js';
export * from './types.js';
export * as ot from './ot.js';
export { Replica, ReplicaError } from './replica.js';
export { DEFAULT_BACKOFF, backoffDelay, backoffWindow, type Backoff } from './backoff.js';
export { encodeJson, decodeJson, JSON_SUBPROTOCOL, FrameError } from './codec-json.js';
