//! FlatBuffer to [`Envelope`]: the verifier's bounds, derived from the
//! [`Limits`], and the reading of each message by the JSON codec's rules,
//! in its order (see "Equivalence with JSON" in the
//! [module documentation](super)).

use std::collections::BTreeMap;

use flatbuffers::{ForwardsUOffset, InvalidFlatbuffer, Vector, VerifierOptions};

use crate::error::DecodeError;
use crate::generated as fb;
use crate::json::{is_valid_id, MAX_ID_BYTES};
use crate::limits::Limits;
use crate::message::*;
use crate::model::{
    Edge, EdgeSet, Entity, Node, NodeSet, OpResolution, PropValue, Props, PropsPatch, Resolution,
    TextEdits,
};
use crate::ot::{TextOp, MAX_COMPONENTS};

/// Verifies the FlatBuffer and reads its envelopes.
pub(super) fn decode_flatbuffer(
    payload: &[u8],
    limits: &Limits,
) -> Result<Vec<Result<Envelope, DecodeError>>, DecodeError> {
    if payload.len() > limits.max_frame_bytes {
        return Err(DecodeError::too_large(format!(
            "frame of {} bytes is over the limit of {} bytes",
            payload.len(),
            limits.max_frame_bytes
        )));
    }
    let options = verifier_options(limits);
    let frame = fb::root_as_frame_with_opts(&options, payload).map_err(verify_error)?;
    let Some(list) = frame.envelopes() else {
        return Ok(Vec::new());
    };
    if list.len() > limits.max_envelopes {
        return Err(DecodeError::too_large(format!(
            "frame holds {} messages; the limit is {}",
            list.len(),
            limits.max_envelopes
        )));
    }
    Ok(list.iter().map(|e| read_envelope(e, limits)).collect())
}

/// The verifier's bounds for a frame within `limits`.
///
/// - depth: a binary message nests at most one level deeper than its JSON
///   form (the `Frame` table around the envelopes);
/// - tables: a table takes at least 8 bytes (its offset to its vtable and
///   an offset pointing at it), so an honest buffer has at most one per 8
///   bytes; more visits mean shared tables read many times;
/// - apparent size: shared vtables are counted once per table, so an honest
///   buffer's apparent size stays within a few times its real size.
fn verifier_options(limits: &Limits) -> VerifierOptions {
    VerifierOptions {
        max_depth: limits.max_depth.saturating_add(1),
        max_tables: (limits.max_frame_bytes / 8).max(16),
        max_apparent_size: limits.max_frame_bytes.saturating_mul(4).max(1024),
        ignore_missing_null_terminator: false,
    }
}

/// The protocol error for a FlatBuffer the verifier refused.
fn verify_error(e: InvalidFlatbuffer) -> DecodeError {
    match e {
        InvalidFlatbuffer::DepthLimitReached => {
            DecodeError::too_large("FlatBuffer is nested too deep")
        }
        InvalidFlatbuffer::TooManyTables | InvalidFlatbuffer::ApparentSizeTooLarge => {
            DecodeError::too_large("FlatBuffer expands past the frame limit")
        }
        other => {
            let text = other.to_string();
            let first = text
                .lines()
                .next()
                .unwrap_or("invalid")
                .trim_end_matches('.');
            DecodeError::bad_frame(format!(
                "payload is not a valid gitmind.v1 FlatBuffer: {}",
                first.to_lowercase()
            ))
        }
    }
}

type R<T> = Result<T, DecodeError>;

/// Types one envelope, by the same rules and in the same order as the JSON
/// codec: type, id, version, then data.
fn read_envelope(e: fb::Envelope<'_>, limits: &Limits) -> R<Envelope> {
    let id = e.id().map(str::to_owned);
    let fail =
        |code, message: String| Err(DecodeError::new(code, message).with_reference(id.clone()));
    let tag = e.data_type();
    let Some(message_type) = message_type(tag) else {
        return fail(
            ErrorCode::UnknownType,
            format!("unknown message type tag {}", tag.0),
        );
    };
    let Some(id_ref) = id.as_deref() else {
        return fail(ErrorCode::Invalid, "message has no `id`".into());
    };
    if !is_valid_id(id_ref) {
        return fail(
            ErrorCode::Invalid,
            format!("`id` must be 1 to {MAX_ID_BYTES} bytes"),
        );
    }
    // From here on the message is known: a mutation is settled with a
    // rollback, whatever else is wrong with it.
    let known = |code, message: String| {
        Err(DecodeError::new(code, message).of_message(id_ref.to_owned(), message_type))
    };
    if let Some(version) = e.version() {
        if version != PROTOCOL_VERSION {
            return known(
                ErrorCode::Invalid,
                format!("unsupported protocol version `{version}`; this server speaks `{PROTOCOL_VERSION}`"),
            );
        }
    }
    let metadata = e.metadata().map(|m| Metadata {
        client_version: own(m.client_version()),
        gonzai_state: own(m.gonzai_state()),
        region: own(m.region()),
    });
    let body = match read_body(&e, limits) {
        Ok(body) => body,
        Err(err) => {
            return known(
                err.code,
                format!("bad `data` for `{}`: {}", message_type.name(), err.message),
            );
        }
    };
    Ok(Envelope {
        id: id.unwrap_or_default(),
        timestamp: e.timestamp(),
        version: own(e.version()),
        user_id: own(e.user_id()),
        session_id: own(e.session_id()),
        seq: e.seq(),
        metadata,
        body,
    })
}

/// The message type of a union tag (`MessageType::ALL[tag - 1]`).
fn message_type(tag: fb::Payload) -> Option<MessageType> {
    let index = usize::from(tag.0).checked_sub(1)?;
    MessageType::ALL.get(index).copied()
}

/// Reads the payload of the envelope's type.
fn read_body(e: &fb::Envelope<'_>, limits: &Limits) -> R<Body> {
    use fb::Payload as P;
    let no_data = || DecodeError::invalid("message has no `data`");
    Ok(match e.data_type() {
        P::NodeCreate => Body::NodeCreate(read_node_create(
            e.data_as_node_create().ok_or_else(no_data)?,
        )?),
        P::NodeUpdate => Body::NodeUpdate(read_node_update(
            e.data_as_node_update().ok_or_else(no_data)?,
        )?),
        P::NodeDelete => Body::NodeDelete(read_node_delete(
            e.data_as_node_delete().ok_or_else(no_data)?,
        )?),
        P::EdgeCreate => Body::EdgeCreate(read_edge_create(
            e.data_as_edge_create().ok_or_else(no_data)?,
        )?),
        P::EdgeUpdate => Body::EdgeUpdate(read_edge_update(
            e.data_as_edge_update().ok_or_else(no_data)?,
        )?),
        P::EdgeDelete => Body::EdgeDelete(read_edge_delete(
            e.data_as_edge_delete().ok_or_else(no_data)?,
        )?),
        P::BatchUpdate => Body::BatchUpdate(read_batch(
            e.data_as_batch_update().ok_or_else(no_data)?,
            limits,
        )?),
        P::GraphSync => Body::GraphSync(read_graph_sync(
            e.data_as_graph_sync().ok_or_else(no_data)?,
            limits,
        )?),
        P::UpdateConfirmed => {
            let d = e.data_as_update_confirmed().ok_or_else(no_data)?;
            Body::UpdateConfirmed(UpdateConfirmed {
                reference: need_str(d.reference(), "ref")?,
                seq: d.seq(),
                commit: need_str(d.commit(), "commit")?,
                rev: d.rev(),
                text: read_text(d.text())?,
            })
        }
        P::UpdateConflictResolved => {
            let d = e.data_as_update_conflict_resolved().ok_or_else(no_data)?;
            let conflicts = need(d.conflicts(), "conflicts")?
                .iter()
                .map(|c| {
                    Ok(Conflict {
                        field: need_str(c.field(), "field")?,
                        seq: c.seq(),
                        user_id: need_str(c.user_id(), "userId")?,
                        index: c.index(),
                    })
                })
                .collect::<R<_>>()?;
            Body::UpdateConflictResolved(UpdateConflictResolved {
                reference: need_str(d.reference(), "ref")?,
                seq: d.seq(),
                commit: need_str(d.commit(), "commit")?,
                rev: d.rev(),
                conflicts,
                resolution: read_resolution(need(d.resolution(), "resolution")?)?,
                text: read_text(d.text())?,
            })
        }
        P::UpdateRollback => {
            let d = e.data_as_update_rollback().ok_or_else(no_data)?;
            let current = match d.current_type() {
                fb::Entity::NONE => None,
                fb::Entity::Node => Some(Entity::Node(read_node(need(
                    d.current_as_node(),
                    "current",
                )?)?)),
                fb::Entity::Edge => Some(Entity::Edge(read_edge(need(
                    d.current_as_edge(),
                    "current",
                )?)?)),
                other => {
                    return Err(DecodeError::invalid(format!(
                        "unknown `current` entity tag {}",
                        other.0
                    )))
                }
            };
            Body::UpdateRollback(UpdateRollback {
                reference: need_str(d.reference(), "ref")?,
                reason: rollback_reason(need(d.reason(), "reason")?)?,
                message: need_str(d.message(), "message")?,
                current,
                index: d.index(),
                retry_after_ms: d.retry_after_ms(),
            })
        }
        P::UserPresence => Body::UserPresence(read_presence(
            e.data_as_user_presence().ok_or_else(no_data)?,
        )?),
        P::CursorMove => {
            Body::CursorMove(read_cursor(e.data_as_cursor_move().ok_or_else(no_data)?)?)
        }
        P::SelectionChange => Body::SelectionChange(read_selection(
            e.data_as_selection_change().ok_or_else(no_data)?,
        )),
        P::RegionSubscribe => {
            let d = e.data_as_region_subscribe().ok_or_else(no_data)?;
            let f = need(d.filter(), "filter")?;
            let bbox = match f.bbox() {
                Some(b) => Some([
                    finite(b.x0(), "bbox")?,
                    finite(b.y0(), "bbox")?,
                    finite(b.x1(), "bbox")?,
                    finite(b.y1(), "bbox")?,
                ]),
                None => None,
            };
            let around = match f.around() {
                Some(a) => Some(Around {
                    id: need_str(a.id(), "around.id")?,
                    depth: a.depth(),
                }),
                None => None,
            };
            Body::RegionSubscribe(RegionSubscribe {
                region_id: need_str(d.region_id(), "regionId")?,
                filter: RegionFilter {
                    all: f.all(),
                    bbox,
                    nodes: strings(f.nodes()),
                    around,
                    prefix: own(f.prefix()),
                },
            })
        }
        P::RegionUnsubscribe => {
            let d = e.data_as_region_unsubscribe().ok_or_else(no_data)?;
            Body::RegionUnsubscribe(RegionUnsubscribe {
                region_id: need_str(d.region_id(), "regionId")?,
            })
        }
        P::RegionSync => {
            let d = e.data_as_region_sync().ok_or_else(no_data)?;
            Body::RegionSync(RegionSync {
                region_id: need_str(d.region_id(), "regionId")?,
                seq: d.seq(),
                nodes: need(d.nodes(), "nodes")?
                    .iter()
                    .map(read_node)
                    .collect::<R<_>>()?,
                edges: need(d.edges(), "edges")?
                    .iter()
                    .map(read_edge)
                    .collect::<R<_>>()?,
            })
        }
        P::RegionEnter => {
            let d = e.data_as_region_enter().ok_or_else(no_data)?;
            Body::RegionEnter(RegionEnter {
                region_id: need_str(d.region_id(), "regionId")?,
                node: read_node(need(d.node(), "node")?)?,
            })
        }
        P::RegionLeave => {
            let d = e.data_as_region_leave().ok_or_else(no_data)?;
            Body::RegionLeave(RegionLeave {
                region_id: need_str(d.region_id(), "regionId")?,
                id: need_str(d.id(), "id")?,
            })
        }
        P::QuerySubscribe => {
            let d = e.data_as_query_subscribe().ok_or_else(no_data)?;
            let q = need(d.query(), "query")?;
            Body::QuerySubscribe(QuerySubscribe {
                query_id: need_str(d.query_id(), "queryId")?,
                query: Query {
                    kind: own(q.kind()),
                    prefix: own(q.prefix()),
                    label_contains: own(q.label_contains()),
                    props: read_props(q.props())?,
                    edge_type: own(q.edge_type()),
                    limit: q.limit(),
                },
            })
        }
        P::QueryUnsubscribe => {
            let d = e.data_as_query_unsubscribe().ok_or_else(no_data)?;
            Body::QueryUnsubscribe(QueryUnsubscribe {
                query_id: need_str(d.query_id(), "queryId")?,
            })
        }
        P::QueryResults => {
            let d = e.data_as_query_results().ok_or_else(no_data)?;
            Body::QueryResults(QueryResults {
                query_id: need_str(d.query_id(), "queryId")?,
                seq: d.seq(),
                results: strings(Some(need(d.results(), "results")?)).unwrap_or_default(),
                added: strings(Some(need(d.added(), "added")?)).unwrap_or_default(),
                removed: strings(Some(need(d.removed(), "removed")?)).unwrap_or_default(),
            })
        }
        P::GonzaiDiscover => {
            let d = e.data_as_gonzai_discover().ok_or_else(no_data)?;
            let ev = need(d.event(), "event")?;
            Body::GonzaiDiscover(GonzaiDiscover {
                event: DiscoverEvent {
                    event_type: need_str(ev.event_type(), "event.type")?,
                    seq: ev.seq(),
                    id: need_str(ev.id(), "event.id")?,
                },
                relevance: finite(d.relevance(), "relevance")?,
                suggestion: need_str(d.suggestion(), "suggestion")?,
                animation: need_str(d.animation(), "animation")?,
            })
        }
        P::GonzaiSuggestion => {
            let d = e.data_as_gonzai_suggestion().ok_or_else(no_data)?;
            let suggestions = match d.suggestions() {
                Some(list) => Some(
                    list.iter()
                        .map(|s| {
                            Ok(Suggestion {
                                target: need_str(s.target(), "target")?,
                                edge_type: need_str(s.edge_type(), "type")?,
                                confidence: finite(s.confidence(), "confidence")?,
                                reason: need_str(s.reason(), "reason")?,
                            })
                        })
                        .collect::<R<_>>()?,
                ),
                None => None,
            };
            Body::GonzaiSuggestion(GonzaiSuggestion {
                for_node: own(d.for_node()),
                limit: d.limit(),
                suggestions,
            })
        }
        P::ChaosTrigger => {
            let d = e.data_as_chaos_trigger().ok_or_else(no_data)?;
            Body::ChaosTrigger(ChaosTrigger {
                intensity: opt_finite(d.intensity(), "intensity")?,
                initiator: own(d.initiator()),
                message: own(d.message()),
            })
        }
        P::SystemHeartbeat => {
            let d = e.data_as_system_heartbeat().ok_or_else(no_data)?;
            Body::SystemHeartbeat(SystemHeartbeat {
                seq: d.seq(),
                server_time: d.server_time(),
            })
        }
        P::SystemError => {
            let d = e.data_as_system_error().ok_or_else(no_data)?;
            Body::SystemError(SystemError {
                code: error_code(need(d.code(), "code")?)?,
                message: need_str(d.message(), "message")?,
                reference: own(d.reference()),
                retry_after_ms: d.retry_after_ms(),
            })
        }
        P::SystemReconnect => {
            let d = e.data_as_system_reconnect().ok_or_else(no_data)?;
            Body::SystemReconnect(SystemReconnect {
                reason: need_str(d.reason(), "reason")?,
                retry_after_ms: d.retry_after_ms(),
            })
        }
        // `read_envelope` checked the tag already.
        other => {
            return Err(DecodeError::new(
                ErrorCode::UnknownType,
                format!("unknown message type tag {}", other.0),
            ))
        }
    })
}

fn read_node_create(d: fb::NodeCreate<'_>) -> R<NodeCreate> {
    Ok(NodeCreate {
        base_seq: d.base_seq(),
        node: read_node(need(d.node(), "node")?)?,
        commit: own(d.commit()),
    })
}

fn read_node_update(d: fb::NodeUpdate<'_>) -> R<NodeUpdate> {
    let set = match d.set() {
        Some(s) => Some(NodeSet {
            kind: own(s.kind()),
            label: own(s.label()),
            content: own(s.content()),
            x: opt_finite(s.x(), "set.x")?,
            y: opt_finite(s.y(), "set.y")?,
            props: read_patch(s.props())?,
        }),
        None => None,
    };
    Ok(NodeUpdate {
        base_seq: d.base_seq(),
        id: need_str(d.id(), "id")?,
        set,
        text: read_text(d.text())?,
        rev: d.rev(),
        updated_at: d.updated_at(),
        updated_by: own(d.updated_by()),
        commit: own(d.commit()),
    })
}

fn read_node_delete(d: fb::NodeDelete<'_>) -> R<NodeDelete> {
    Ok(NodeDelete {
        base_seq: d.base_seq(),
        id: need_str(d.id(), "id")?,
        commit: own(d.commit()),
    })
}

fn read_edge_create(d: fb::EdgeCreate<'_>) -> R<EdgeCreate> {
    Ok(EdgeCreate {
        base_seq: d.base_seq(),
        edge: read_edge(need(d.edge(), "edge")?)?,
        commit: own(d.commit()),
    })
}

fn read_edge_update(d: fb::EdgeUpdate<'_>) -> R<EdgeUpdate> {
    let set = match d.set() {
        Some(s) => Some(EdgeSet {
            confidence: opt_finite(s.confidence(), "set.confidence")?,
            rationale: own(s.rationale()),
            bidirectional: s.bidirectional(),
            props: read_patch(s.props())?,
        }),
        None => None,
    };
    Ok(EdgeUpdate {
        base_seq: d.base_seq(),
        id: own(d.id()),
        source: own(d.source()),
        edge_type: own(d.edge_type()),
        target: own(d.target()),
        set,
        rev: d.rev(),
        updated_at: d.updated_at(),
        updated_by: own(d.updated_by()),
        commit: own(d.commit()),
    })
}

fn read_edge_delete(d: fb::EdgeDelete<'_>) -> R<EdgeDelete> {
    Ok(EdgeDelete {
        base_seq: d.base_seq(),
        id: own(d.id()),
        source: own(d.source()),
        edge_type: own(d.edge_type()),
        target: own(d.target()),
        commit: own(d.commit()),
    })
}

fn read_batch(d: fb::BatchUpdate<'_>, limits: &Limits) -> R<BatchUpdate> {
    use fb::Mutation as M;
    let list = need(d.ops(), "ops")?;
    if list.len() > limits.max_envelopes {
        return Err(DecodeError::too_large(format!(
            "batch holds {} ops; the limit is {}",
            list.len(),
            limits.max_envelopes
        )));
    }
    let mut ops = Vec::with_capacity(list.len());
    for (index, op) in list.iter().enumerate() {
        let missing = || DecodeError::invalid(format!("op {index} has no `data`"));
        let read = match op.op_type() {
            M::NodeCreate => op
                .op_as_node_create()
                .ok_or_else(missing)
                .and_then(read_node_create)
                .map(BatchOp::NodeCreate),
            M::NodeUpdate => op
                .op_as_node_update()
                .ok_or_else(missing)
                .and_then(read_node_update)
                .map(BatchOp::NodeUpdate),
            M::NodeDelete => op
                .op_as_node_delete()
                .ok_or_else(missing)
                .and_then(read_node_delete)
                .map(BatchOp::NodeDelete),
            M::EdgeCreate => op
                .op_as_edge_create()
                .ok_or_else(missing)
                .and_then(read_edge_create)
                .map(BatchOp::EdgeCreate),
            M::EdgeUpdate => op
                .op_as_edge_update()
                .ok_or_else(missing)
                .and_then(read_edge_update)
                .map(BatchOp::EdgeUpdate),
            M::EdgeDelete => op
                .op_as_edge_delete()
                .ok_or_else(missing)
                .and_then(read_edge_delete)
                .map(BatchOp::EdgeDelete),
            other => Err(DecodeError::invalid(format!(
                "op {index} has an unknown type tag {}",
                other.0
            ))),
        };
        ops.push(read.map_err(|e| DecodeError::new(e.code, format!("op {index}: {}", e.message)))?);
    }
    Ok(BatchUpdate {
        base_seq: d.base_seq(),
        ops,
        commit: own(d.commit()),
    })
}

fn read_graph_sync(d: fb::GraphSync<'_>, limits: &Limits) -> R<GraphSync> {
    let mode = match d.mode() {
        Some(fb::SyncMode::Snapshot) => Some(SyncMode::Snapshot),
        Some(fb::SyncMode::Delta) => Some(SyncMode::Delta),
        Some(other) => {
            return Err(DecodeError::invalid(format!(
                "unknown `mode` value {}",
                other.0
            )))
        }
        None => None,
    };
    let nodes = match d.nodes() {
        Some(list) => Some(list.iter().map(read_node).collect::<R<_>>()?),
        None => None,
    };
    let edges = match d.edges() {
        Some(list) => Some(list.iter().map(read_edge).collect::<R<_>>()?),
        None => None,
    };
    let events = match d.events() {
        // A bad event spoils the whole sync, as in JSON.
        Some(list) => Some(
            list.iter()
                .enumerate()
                .map(|(i, e)| {
                    read_envelope(e, limits)
                        .map_err(|err| DecodeError::invalid(format!("event {i}: {}", err.message)))
                })
                .collect::<R<_>>()?,
        ),
        None => None,
    };
    let presence = match d.presence() {
        Some(list) => Some(
            list.iter()
                .map(|p| {
                    Ok(PresenceState {
                        user_id: need_str(p.user_id(), "userId")?,
                        session_id: need_str(p.session_id(), "sessionId")?,
                        presence: read_presence(need(p.presence(), "presence")?)?,
                        cursor: p.cursor().map(read_cursor).transpose()?,
                        selection: p.selection().map(read_selection),
                    })
                })
                .collect::<R<_>>()?,
        ),
        None => None,
    };
    Ok(GraphSync {
        mode,
        epoch: own(d.epoch()),
        seq: d.seq(),
        since: d.since(),
        nodes,
        edges,
        events,
        presence,
        heartbeat_ms: d.heartbeat_ms(),
        chunk: d.chunk().map(|c| Chunk {
            index: c.index(),
            count: c.count(),
        }),
    })
}

fn read_presence(d: fb::UserPresence<'_>) -> R<UserPresence> {
    let status = match need(d.status(), "status")? {
        fb::PresenceStatus::Active => PresenceStatus::Active,
        fb::PresenceStatus::Idle => PresenceStatus::Idle,
        fb::PresenceStatus::Away => PresenceStatus::Away,
        fb::PresenceStatus::Joined => PresenceStatus::Joined,
        fb::PresenceStatus::Left => PresenceStatus::Left,
        other => {
            return Err(DecodeError::invalid(format!(
                "unknown `status` value {}",
                other.0
            )))
        }
    };
    Ok(UserPresence {
        status,
        focus: own(d.focus()),
        display_name: own(d.display_name()),
        color: own(d.color()),
        chaos_affinity: opt_finite(d.chaos_affinity(), "chaosAffinity")?,
    })
}

fn read_cursor(d: fb::CursorMove<'_>) -> R<CursorMove> {
    Ok(CursorMove {
        x: finite(d.x(), "x")?,
        y: finite(d.y(), "y")?,
        node_id: own(d.node_id()),
    })
}

fn read_selection(d: fb::SelectionChange<'_>) -> SelectionChange {
    SelectionChange {
        nodes: strings(d.nodes()).unwrap_or_default(),
        edges: strings(d.edges()).unwrap_or_default(),
    }
}

fn read_node(n: fb::Node<'_>) -> R<Node> {
    Ok(Node {
        id: need_str(n.id(), "node.id")?,
        kind: own(n.kind()),
        label: own(n.label()),
        content: own(n.content()),
        x: opt_finite(n.x(), "x")?,
        y: opt_finite(n.y(), "y")?,
        props: read_props(n.props())?,
        rev: n.rev(),
        created_at: n.created_at(),
        updated_at: n.updated_at(),
        created_by: own(n.created_by()),
        updated_by: own(n.updated_by()),
    })
}

fn read_edge(e: fb::Edge<'_>) -> R<Edge> {
    Ok(Edge {
        id: own(e.id()),
        source: need_str(e.source(), "edge.source")?,
        edge_type: need_str(e.edge_type(), "edge.type")?,
        target: need_str(e.target(), "edge.target")?,
        confidence: opt_finite(e.confidence(), "confidence")?,
        rationale: own(e.rationale()),
        bidirectional: e.bidirectional(),
        props: read_props(e.props())?,
        rev: e.rev(),
        created_at: e.created_at(),
        updated_at: e.updated_at(),
        created_by: own(e.created_by()),
        updated_by: own(e.updated_by()),
    })
}

fn read_resolution(r: fb::Resolution<'_>) -> R<Resolution> {
    let ops = match r.ops() {
        Some(list) => Some(
            list.iter()
                .map(|o| {
                    Ok(OpResolution {
                        index: o.index(),
                        resolution: read_resolution(need(o.resolution(), "resolution")?)?,
                    })
                })
                .collect::<R<_>>()?,
        ),
        None => None,
    };
    Ok(Resolution {
        kind: own(r.kind()),
        label: own(r.label()),
        content: own(r.content()),
        x: opt_finite(r.x(), "x")?,
        y: opt_finite(r.y(), "y")?,
        confidence: opt_finite(r.confidence(), "confidence")?,
        rationale: own(r.rationale()),
        bidirectional: r.bidirectional(),
        props: read_patch(r.props())?,
        ops,
    })
}

/// A prop's value: `None` when no value is set (a removal in a patch).
fn read_prop_value(p: &fb::Prop<'_>, key: &str) -> R<Option<PropValue>> {
    match (p.string_value(), p.number_value(), p.bool_value()) {
        (None, None, None) => Ok(None),
        (Some(s), None, None) => Ok(Some(PropValue::String(s.to_owned()))),
        (None, Some(n), None) => Ok(Some(PropValue::Number(finite(n, key)?))),
        (None, None, Some(b)) => Ok(Some(PropValue::Bool(b))),
        _ => Err(DecodeError::invalid(format!(
            "property `{key}` has more than one value"
        ))),
    }
}

/// Properties; a key given twice keeps its last value, as in JSON.
fn read_props(list: Option<Vector<'_, ForwardsUOffset<fb::Prop<'_>>>>) -> R<Option<Props>> {
    let Some(list) = list else { return Ok(None) };
    let mut props = BTreeMap::new();
    for p in list.iter() {
        let key = need(p.key(), "property key")?;
        let Some(value) = read_prop_value(&p, key)? else {
            return Err(DecodeError::invalid(format!(
                "property `{key}` has no value"
            )));
        };
        props.insert(key.to_owned(), value);
    }
    Ok(Some(props))
}

/// A properties patch: a key without a value is a removal.
fn read_patch(list: Option<Vector<'_, ForwardsUOffset<fb::Prop<'_>>>>) -> R<Option<PropsPatch>> {
    let Some(list) = list else { return Ok(None) };
    let mut props = BTreeMap::new();
    for p in list.iter() {
        let key = need(p.key(), "property key")?;
        props.insert(key.to_owned(), read_prop_value(&p, key)?);
    }
    Ok(Some(props))
}

/// Text edits; the operation is checked as the JSON reader checks it.
fn read_text(t: Option<fb::TextEdits<'_>>) -> R<Option<TextEdits>> {
    let Some(t) = t else { return Ok(None) };
    let Some(list) = t.content() else {
        return Ok(Some(TextEdits { content: None }));
    };
    if list.len() > MAX_COMPONENTS {
        return Err(DecodeError::invalid(format!(
            "text operation has more than {MAX_COMPONENTS} components"
        )));
    }
    let mut op = TextOp::new();
    let (mut base, mut target) = (0u64, 0u64);
    let overflow = || {
        DecodeError::invalid("text operation is too long: its character counts add up past 64 bits")
    };
    for (index, c) in list.iter().enumerate() {
        match (c.insert(), c.n()) {
            (Some(s), 0) => {
                if s.is_empty() {
                    return Err(DecodeError::invalid(format!(
                        "text operation component {index} is an empty string; an insert must contain text"
                    )));
                }
                target = target
                    .checked_add(s.chars().count() as u64)
                    .ok_or_else(overflow)?;
                op.insert(s);
            }
            (Some(_), _) => {
                return Err(DecodeError::invalid(format!(
                    "text operation component {index} has both a count and an insert"
                )));
            }
            (None, 0) => {
                return Err(DecodeError::invalid(format!(
                    "text operation component {index} is 0; use a positive retain or a negative delete"
                )));
            }
            (None, n) if n > 0 => {
                let n = n.unsigned_abs();
                base = base.checked_add(n).ok_or_else(overflow)?;
                target = target.checked_add(n).ok_or_else(overflow)?;
                op.retain(n);
            }
            (None, n) => {
                let n = n.unsigned_abs();
                base = base.checked_add(n).ok_or_else(overflow)?;
                op.delete(n);
            }
        }
    }
    Ok(Some(TextEdits { content: Some(op) }))
}

fn rollback_reason(r: fb::RollbackReason) -> R<RollbackReason> {
    use fb::RollbackReason as F;
    Ok(match r {
        F::Invalid => RollbackReason::Invalid,
        F::NotFound => RollbackReason::NotFound,
        F::AlreadyExists => RollbackReason::AlreadyExists,
        F::Deleted => RollbackReason::Deleted,
        F::Forbidden => RollbackReason::Forbidden,
        F::RateLimited => RollbackReason::RateLimited,
        F::TooLarge => RollbackReason::TooLarge,
        F::Stale => RollbackReason::Stale,
        F::Unavailable => RollbackReason::Unavailable,
        other => {
            return Err(DecodeError::invalid(format!(
                "unknown `reason` value {}",
                other.0
            )))
        }
    })
}

fn error_code(c: fb::ErrorCode) -> R<ErrorCode> {
    use fb::ErrorCode as F;
    Ok(match c {
        F::BadFrame => ErrorCode::BadFrame,
        F::Invalid => ErrorCode::Invalid,
        F::UnknownType => ErrorCode::UnknownType,
        F::RateLimited => ErrorCode::RateLimited,
        F::TooLarge => ErrorCode::TooLarge,
        F::Forbidden => ErrorCode::Forbidden,
        F::Internal => ErrorCode::Internal,
        other => {
            return Err(DecodeError::invalid(format!(
                "unknown `code` value {}",
                other.0
            )))
        }
    })
}

/// A required field.
fn need<T>(v: Option<T>, field: &str) -> R<T> {
    v.ok_or_else(|| DecodeError::invalid(format!("missing field `{field}`")))
}

/// A required string, owned.
fn need_str(v: Option<&str>, field: &str) -> R<String> {
    need(v, field).map(str::to_owned)
}

/// An optional string, owned.
fn own(v: Option<&str>) -> Option<String> {
    v.map(str::to_owned)
}

/// A list of strings, owned.
fn strings(v: Option<Vector<'_, ForwardsUOffset<&str>>>) -> Option<Vec<String>> {
    v.map(|list| list.iter().map(str::to_owned).collect())
}

/// A number JSON could carry.
fn finite(v: f64, field: &str) -> R<f64> {
    if v.is_finite() {
        Ok(v)
    } else {
        Err(DecodeError::invalid(format!(
            "`{field}` is {v}, not a finite number"
        )))
    }
}

fn opt_finite(v: Option<f64>, field: &str) -> R<Option<f64>> {
    v.map(|v| finite(v, field)).transpose()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn union_tags_follow_message_type_order() {
        for (i, ty) in MessageType::ALL.iter().enumerate() {
            let tag = fb::Payload(u8::try_from(i + 1).unwrap());
            assert_eq!(tag.variant_name(), Some(format!("{ty:?}").as_str()));
            assert_eq!(message_type(tag), Some(*ty));
        }
        assert_eq!(message_type(fb::Payload::NONE), None);
    }
}
