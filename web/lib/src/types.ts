/**
 * The protocol's messages and entities as JSON values (docs/protocol.md 2.1,
 * 3 to 10). These are the wire shapes: the binary codec produces the same.
 */
import type { TextOp } from './ot.js';

/** A prop value; `null` only in a patch, where it removes the key. */
export type PropValue = string | number | boolean;
export type Props = Record<string, PropValue>;
export type PropsPatch = Record<string, PropValue | null>;

/** A node (section 3). Server fields are absent on what a client sends. */
export interface Node {
  id: string;
  kind?: string;
  label?: string;
  content?: string;
  x?: number;
  y?: number;
  props?: Props;
  rev?: number;
  createdAt?: number;
  updatedAt?: number;
  createdBy?: string;
  updatedBy?: string;
}

/** An edge (section 3); `id` is `"{source} -[{type}]-> {target}"`. */
export interface Edge {
  id?: string;
  source: string;
  type: string;
  target: string;
  confidence?: number;
  rationale?: string;
  bidirectional?: boolean;
  props?: Props;
  rev?: number;
  createdAt?: number;
  updatedAt?: number;
  createdBy?: string;
  updatedBy?: string;
}

export interface NodeSet {
  kind?: string;
  label?: string;
  content?: string;
  x?: number;
  y?: number;
  props?: PropsPatch;
}

export interface EdgeSet {
  confidence?: number;
  rationale?: string;
  bidirectional?: boolean;
  props?: PropsPatch;
}

/** The id the server gives an edge. */
export function edgeId(e: { id?: string; source: string; type: string; target: string }): string {
  return e.id ?? `${e.source} -[${e.type}]-> ${e.target}`;
}

export type MutationType =
  | 'node.create' | 'node.update' | 'node.delete'
  | 'edge.create' | 'edge.update' | 'edge.delete'
  | 'batch.update';

export type MessageType =
  | MutationType
  | 'graph.sync' | 'update.confirmed' | 'update.conflict_resolved' | 'update.rollback'
  | 'user.presence' | 'cursor.move' | 'selection.change'
  | 'region.subscribe' | 'region.unsubscribe' | 'region.sync' | 'region.enter' | 'region.leave'
  | 'query.subscribe' | 'query.unsubscribe' | 'query.results'
  | 'gonzai.discover' | 'gonzai.suggestion' | 'chaos.trigger'
  | 'system.heartbeat' | 'system.error' | 'system.reconnect';

/** Every type, in schema order: the binary union tag is the index + 1. */
export const MESSAGE_TYPES: readonly MessageType[] = [
  'node.create', 'node.update', 'node.delete', 'edge.create', 'edge.update', 'edge.delete',
  'batch.update', 'graph.sync', 'update.confirmed', 'update.conflict_resolved', 'update.rollback',
  'user.presence', 'cursor.move', 'selection.change', 'region.subscribe', 'region.unsubscribe',
  'region.sync', 'region.enter', 'region.leave', 'query.subscribe', 'query.unsubscribe',
  'query.results', 'gonzai.discover', 'gonzai.suggestion', 'chaos.trigger', 'system.heartbeat',
  'system.error', 'system.reconnect',
];

export const MUTATION_TYPES: readonly MutationType[] = [
  'node.create', 'node.update', 'node.delete', 'edge.create', 'edge.update', 'edge.delete', 'batch.update',
];

export function isMutationType(t: string): t is MutationType {
  return (MUTATION_TYPES as readonly string[]).includes(t);
}

/** The envelope (2.1). `data` is typed loosely: see the data interfaces below. */
export interface Envelope<D = any> {
  id?: string;
  type: string;
  timestamp?: number;
  version?: string;
  userId?: string;
  sessionId?: string;
  seq?: number;
  data?: D;
  metadata?: { clientVersion?: string; gonzaiState?: string; region?: string };
}

export interface NodeCreateData { baseSeq?: number; node: Node; commit?: string }
export interface NodeUpdateData {
  baseSeq?: number; id: string; set?: NodeSet; text?: { content?: TextOp };
  rev?: number; updatedAt?: number; updatedBy?: string; commit?: string;
}
export interface NodeDeleteData { baseSeq?: number; id: string; commit?: string }
export interface EdgeCreateData { baseSeq?: number; edge: Edge; commit?: string }
export interface EdgeUpdateData {
  baseSeq?: number; id?: string; source?: string; type?: string; target?: string; set?: EdgeSet;
  rev?: number; updatedAt?: number; updatedBy?: string; commit?: string;
}
export interface EdgeDeleteData { baseSeq?: number; id?: string; source?: string; type?: string; target?: string; commit?: string }

/** One op of a batch, or a single mutation: `{type, data}`. */
export type Op =
  | { type: 'node.create'; data: NodeCreateData }
  | { type: 'node.update'; data: NodeUpdateData }
  | { type: 'node.delete'; data: NodeDeleteData }
  | { type: 'edge.create'; data: EdgeCreateData }
  | { type: 'edge.update'; data: EdgeUpdateData }
  | { type: 'edge.delete'; data: EdgeDeleteData };
export interface BatchUpdateData { baseSeq?: number; ops: Op[]; commit?: string }
/** A mutation body: one op or a batch. */
export type Mutation = Op | { type: 'batch.update'; data: BatchUpdateData };

export interface Resolution {
  kind?: string; label?: string; content?: string; x?: number; y?: number;
  confidence?: number; rationale?: string; bidirectional?: boolean; props?: PropsPatch;
  ops?: { index: number; resolution: Resolution }[];
}

export interface UpdateConfirmed { ref: string; seq: number; commit: string; rev?: number; text?: { content?: TextOp } }
export interface UpdateConflictResolved extends UpdateConfirmed {
  conflicts: { field: string; seq: number; userId: string; index?: number }[];
  resolution: Resolution;
}
export type RollbackReason =
  | 'invalid' | 'too_large' | 'not_found' | 'already_exists' | 'deleted' | 'stale'
  | 'unavailable' | 'forbidden' | 'rate_limited' | (string & {});
export interface UpdateRollback {
  ref: string; reason: RollbackReason; message?: string; current?: Node | Edge;
  index?: number; retryAfterMs?: number;
}

export interface PresenceData {
  status: 'active' | 'idle' | 'away' | 'joined' | 'left' | (string & {});
  focus?: string; displayName?: string; color?: string; chaosAffinity?: number;
}
export interface CursorData { x: number; y: number; nodeId?: string }
export interface SelectionData { nodes?: string[]; edges?: string[] }
export interface SyncPresence {
  userId: string; sessionId: string; presence: PresenceData; cursor?: CursorData; selection?: SelectionData;
}

export interface GraphSyncData {
  mode?: 'snapshot' | 'delta';
  epoch?: string;
  seq?: number;
  since?: number;
  nodes?: Node[];
  edges?: Edge[];
  events?: Envelope[];
  presence?: SyncPresence[];
  heartbeatMs?: number;
  chunk?: { index: number; count: number };
}

export interface SystemError { code: string; message?: string; ref?: string; retryAfterMs?: number }
export interface SystemReconnect { reason: string; retryAfterMs: number }

// ----- Sections 7 (subscriptions) and 9 (Gonzai): the shapes, for `sendRaw` and the `message` event -----

export interface RegionFilter {
  all?: boolean;
  /** `[x0, y0, x1, y1]` */
  bbox?: [number, number, number, number];
  nodes?: string[];
  around?: { id: string; depth: number };
  prefix?: string;
}
export interface RegionSubscribeData { regionId: string; filter: RegionFilter }
export interface RegionUnsubscribeData { regionId: string }
export interface RegionSyncData { regionId: string; seq: number; nodes: Node[]; edges: Edge[] }
export interface RegionEnterData { regionId: string; node: Node }
export interface RegionLeaveData { regionId: string; id: string }
export interface Query {
  kind?: string; prefix?: string; labelContains?: string; props?: Props; edgeType?: string; limit?: number;
}
export interface QuerySubscribeData { queryId: string; query: Query }
export interface QueryUnsubscribeData { queryId: string }
export interface QueryResultsData { queryId: string; seq: number; results: string[]; added: string[]; removed: string[] }
export interface GonzaiDiscoverData {
  event: { type: string; seq: number; id: string };
  relevance: number; suggestion: string; animation: string;
}
export interface GonzaiSuggestionData {
  for?: string; limit?: number;
  suggestions?: { target: string; type: string; confidence: number; reason: string }[];
}
export interface ChaosTriggerData { intensity?: number; initiator?: string; message?: string }
