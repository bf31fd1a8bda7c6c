//! [`Envelope`] to FlatBuffer: one builder per thread, reused, and the
//! tables of every message, in `schema/gitmind.fbs`'s layout.

use std::cell::RefCell;

use flatbuffers::{FlatBufferBuilder, ForwardsUOffset, Vector, WIPOffset};

use super::{BUILDER_KEEP_BYTES, BUILDER_START_BYTES};
use crate::generated as fb;
use crate::message::*;
use crate::model::{Edge, Entity, Node, PropValue, Props, PropsPatch, Resolution, TextEdits};
use crate::ot::Component;

thread_local! {
    /// One builder per thread, reused so that encoding does not allocate it.
    static BUILDER: RefCell<FlatBufferBuilder<'static>> =
        RefCell::new(FlatBufferBuilder::with_capacity(BUILDER_START_BYTES));
}

/// Builds one `Frame` of `envelopes` in this thread's builder and hands the
/// finished FlatBuffer to `finish`, which makes the frame from it.
pub(super) fn with_frame<T>(envelopes: &[Envelope], finish: impl FnOnce(&[u8]) -> T) -> T {
    BUILDER.with(|cell| {
        let mut builder = cell.borrow_mut();
        builder.reset();
        let list: Vec<_> = envelopes
            .iter()
            .map(|e| put_envelope(&mut builder, e))
            .collect();
        let list = builder.create_vector(&list);
        let root = fb::Frame::create(
            &mut builder,
            &fb::FrameArgs {
                envelopes: Some(list),
            },
        );
        fb::finish_frame_buffer(&mut builder, root);
        let out = finish(builder.finished_data());
        if builder.finished_data().len() > BUILDER_KEEP_BYTES {
            // Do not keep a large buffer alive per thread after a big sync.
            *builder = FlatBufferBuilder::with_capacity(BUILDER_START_BYTES);
        }
        out
    })
}

type B<'b> = FlatBufferBuilder<'b>;
type Union = WIPOffset<flatbuffers::UnionWIPOffset>;

fn put_str<'b>(b: &mut B<'b>, s: &Option<String>) -> Option<WIPOffset<&'b str>> {
    s.as_deref().map(|s| b.create_string(s))
}

fn put_strings<'b>(
    b: &mut B<'b>,
    list: &[String],
) -> WIPOffset<Vector<'b, ForwardsUOffset<&'b str>>> {
    let offsets: Vec<_> = list.iter().map(|s| b.create_string(s)).collect();
    b.create_vector(&offsets)
}

fn put_opt_strings<'b>(
    b: &mut B<'b>,
    list: &Option<Vec<String>>,
) -> Option<WIPOffset<Vector<'b, ForwardsUOffset<&'b str>>>> {
    list.as_deref().map(|l| put_strings(b, l))
}

/// A list of strings that reads as empty when absent: left out when empty.
fn put_nonempty_strings<'b>(
    b: &mut B<'b>,
    list: &[String],
) -> Option<WIPOffset<Vector<'b, ForwardsUOffset<&'b str>>>> {
    (!list.is_empty()).then(|| put_strings(b, list))
}

fn put_envelope<'b>(b: &mut B<'b>, e: &Envelope) -> WIPOffset<fb::Envelope<'b>> {
    let id = b.create_string(&e.id);
    let version = put_str(b, &e.version);
    let user_id = put_str(b, &e.user_id);
    let session_id = put_str(b, &e.session_id);
    let metadata = e.metadata.as_ref().map(|m| {
        let client_version = put_str(b, &m.client_version);
        let gonzai_state = put_str(b, &m.gonzai_state);
        let region = put_str(b, &m.region);
        fb::Metadata::create(
            b,
            &fb::MetadataArgs {
                client_version,
                gonzai_state,
                region,
            },
        )
    });
    let (data_type, data) = put_body(b, &e.body);
    fb::Envelope::create(
        b,
        &fb::EnvelopeArgs {
            id: Some(id),
            timestamp: e.timestamp,
            version,
            user_id,
            session_id,
            seq: e.seq,
            metadata,
            data_type,
            data: Some(data),
        },
    )
}

fn put_body(b: &mut B<'_>, body: &Body) -> (fb::Payload, Union) {
    use fb::Payload as P;
    match body {
        Body::NodeCreate(d) => (P::NodeCreate, put_node_create(b, d).as_union_value()),
        Body::NodeUpdate(d) => (P::NodeUpdate, put_node_update(b, d).as_union_value()),
        Body::NodeDelete(d) => (P::NodeDelete, put_node_delete(b, d).as_union_value()),
        Body::EdgeCreate(d) => (P::EdgeCreate, put_edge_create(b, d).as_union_value()),
        Body::EdgeUpdate(d) => (P::EdgeUpdate, put_edge_update(b, d).as_union_value()),
        Body::EdgeDelete(d) => (P::EdgeDelete, put_edge_delete(b, d).as_union_value()),
        Body::BatchUpdate(d) => {
            let ops: Vec<_> = d
                .ops
                .iter()
                .map(|op| {
                    use fb::Mutation as M;
                    let (op_type, op) = match op {
                        BatchOp::NodeCreate(d) => {
                            (M::NodeCreate, put_node_create(b, d).as_union_value())
                        }
                        BatchOp::NodeUpdate(d) => {
                            (M::NodeUpdate, put_node_update(b, d).as_union_value())
                        }
                        BatchOp::NodeDelete(d) => {
                            (M::NodeDelete, put_node_delete(b, d).as_union_value())
                        }
                        BatchOp::EdgeCreate(d) => {
                            (M::EdgeCreate, put_edge_create(b, d).as_union_value())
                        }
                        BatchOp::EdgeUpdate(d) => {
                            (M::EdgeUpdate, put_edge_update(b, d).as_union_value())
                        }
                        BatchOp::EdgeDelete(d) => {
                            (M::EdgeDelete, put_edge_delete(b, d).as_union_value())
                        }
                    };
                    fb::BatchOp::create(
                        b,
                        &fb::BatchOpArgs {
                            op_type,
                            op: Some(op),
                        },
                    )
                })
                .collect();
            let ops = b.create_vector(&ops);
            let commit = put_str(b, &d.commit);
            let t = fb::BatchUpdate::create(
                b,
                &fb::BatchUpdateArgs {
                    base_seq: d.base_seq,
                    ops: Some(ops),
                    commit,
                },
            );
            (P::BatchUpdate, t.as_union_value())
        }
        Body::GraphSync(d) => (P::GraphSync, put_graph_sync(b, d).as_union_value()),
        Body::UpdateConfirmed(d) => {
            let reference = b.create_string(&d.reference);
            let commit = b.create_string(&d.commit);
            let text = put_text(b, &d.text);
            let t = fb::UpdateConfirmed::create(
                b,
                &fb::UpdateConfirmedArgs {
                    reference: Some(reference),
                    seq: d.seq,
                    commit: Some(commit),
                    rev: d.rev,
                    text,
                },
            );
            (P::UpdateConfirmed, t.as_union_value())
        }
        Body::UpdateConflictResolved(d) => {
            let reference = b.create_string(&d.reference);
            let commit = b.create_string(&d.commit);
            let conflicts: Vec<_> = d
                .conflicts
                .iter()
                .map(|c| {
                    let field = b.create_string(&c.field);
                    let user_id = b.create_string(&c.user_id);
                    fb::Conflict::create(
                        b,
                        &fb::ConflictArgs {
                            field: Some(field),
                            seq: c.seq,
                            user_id: Some(user_id),
                            index: c.index,
                        },
                    )
                })
                .collect();
            let conflicts = b.create_vector(&conflicts);
            let resolution = put_resolution(b, &d.resolution);
            let text = put_text(b, &d.text);
            let t = fb::UpdateConflictResolved::create(
                b,
                &fb::UpdateConflictResolvedArgs {
                    reference: Some(reference),
                    seq: d.seq,
                    commit: Some(commit),
                    rev: d.rev,
                    conflicts: Some(conflicts),
                    resolution: Some(resolution),
                    text,
                },
            );
            (P::UpdateConflictResolved, t.as_union_value())
        }
        Body::UpdateRollback(d) => {
            let reference = b.create_string(&d.reference);
            let message = b.create_string(&d.message);
            let (current_type, current) = match &d.current {
                None => (fb::Entity::NONE, None),
                Some(Entity::Node(n)) => (fb::Entity::Node, Some(put_node(b, n).as_union_value())),
                Some(Entity::Edge(e)) => (fb::Entity::Edge, Some(put_edge(b, e).as_union_value())),
            };
            let t = fb::UpdateRollback::create(
                b,
                &fb::UpdateRollbackArgs {
                    reference: Some(reference),
                    reason: Some(put_reason(d.reason)),
                    message: Some(message),
                    current_type,
                    current,
                    index: d.index,
                    retry_after_ms: d.retry_after_ms,
                },
            );
            (P::UpdateRollback, t.as_union_value())
        }
        Body::UserPresence(d) => (P::UserPresence, put_presence(b, d).as_union_value()),
        Body::CursorMove(d) => (P::CursorMove, put_cursor(b, d).as_union_value()),
        Body::SelectionChange(d) => (P::SelectionChange, put_selection(b, d).as_union_value()),
        Body::RegionSubscribe(d) => {
            let region_id = b.create_string(&d.region_id);
            let f = &d.filter;
            let bbox = f.bbox.map(|[x0, y0, x1, y1]| fb::BBox::new(x0, y0, x1, y1));
            let nodes = put_opt_strings(b, &f.nodes);
            let around = f.around.as_ref().map(|a| {
                let id = b.create_string(&a.id);
                fb::Around::create(
                    b,
                    &fb::AroundArgs {
                        id: Some(id),
                        depth: a.depth,
                    },
                )
            });
            let prefix = put_str(b, &f.prefix);
            let filter = fb::RegionFilter::create(
                b,
                &fb::RegionFilterArgs {
                    all: f.all,
                    bbox: bbox.as_ref(),
                    nodes,
                    around,
                    prefix,
                },
            );
            let t = fb::RegionSubscribe::create(
                b,
                &fb::RegionSubscribeArgs {
                    region_id: Some(region_id),
                    filter: Some(filter),
                },
            );
            (P::RegionSubscribe, t.as_union_value())
        }
        Body::RegionUnsubscribe(d) => {
            let region_id = b.create_string(&d.region_id);
            let t = fb::RegionUnsubscribe::create(
                b,
                &fb::RegionUnsubscribeArgs {
                    region_id: Some(region_id),
                },
            );
            (P::RegionUnsubscribe, t.as_union_value())
        }
        Body::RegionSync(d) => {
            let region_id = b.create_string(&d.region_id);
            let nodes: Vec<_> = d.nodes.iter().map(|n| put_node(b, n)).collect();
            let nodes = b.create_vector(&nodes);
            let edges: Vec<_> = d.edges.iter().map(|e| put_edge(b, e)).collect();
            let edges = b.create_vector(&edges);
            let t = fb::RegionSync::create(
                b,
                &fb::RegionSyncArgs {
                    region_id: Some(region_id),
                    seq: d.seq,
                    nodes: Some(nodes),
                    edges: Some(edges),
                },
            );
            (P::RegionSync, t.as_union_value())
        }
        Body::RegionEnter(d) => {
            let region_id = b.create_string(&d.region_id);
            let node = put_node(b, &d.node);
            let t = fb::RegionEnter::create(
                b,
                &fb::RegionEnterArgs {
                    region_id: Some(region_id),
                    node: Some(node),
                },
            );
            (P::RegionEnter, t.as_union_value())
        }
        Body::RegionLeave(d) => {
            let region_id = b.create_string(&d.region_id);
            let id = b.create_string(&d.id);
            let t = fb::RegionLeave::create(
                b,
                &fb::RegionLeaveArgs {
                    region_id: Some(region_id),
                    id: Some(id),
                },
            );
            (P::RegionLeave, t.as_union_value())
        }
        Body::QuerySubscribe(d) => {
            let query_id = b.create_string(&d.query_id);
            let q = &d.query;
            let kind = put_str(b, &q.kind);
            let prefix = put_str(b, &q.prefix);
            let label_contains = put_str(b, &q.label_contains);
            let props = q.props.as_ref().map(|p| put_props(b, p));
            let edge_type = put_str(b, &q.edge_type);
            let query = fb::Query::create(
                b,
                &fb::QueryArgs {
                    kind,
                    prefix,
                    label_contains,
                    props,
                    edge_type,
                    limit: q.limit,
                },
            );
            let t = fb::QuerySubscribe::create(
                b,
                &fb::QuerySubscribeArgs {
                    query_id: Some(query_id),
                    query: Some(query),
                },
            );
            (P::QuerySubscribe, t.as_union_value())
        }
        Body::QueryUnsubscribe(d) => {
            let query_id = b.create_string(&d.query_id);
            let t = fb::QueryUnsubscribe::create(
                b,
                &fb::QueryUnsubscribeArgs {
                    query_id: Some(query_id),
                },
            );
            (P::QueryUnsubscribe, t.as_union_value())
        }
        Body::QueryResults(d) => {
            let query_id = b.create_string(&d.query_id);
            let results = put_strings(b, &d.results);
            let added = put_strings(b, &d.added);
            let removed = put_strings(b, &d.removed);
            let t = fb::QueryResults::create(
                b,
                &fb::QueryResultsArgs {
                    query_id: Some(query_id),
                    seq: d.seq,
                    results: Some(results),
                    added: Some(added),
                    removed: Some(removed),
                },
            );
            (P::QueryResults, t.as_union_value())
        }
        Body::GonzaiDiscover(d) => {
            let event_type = b.create_string(&d.event.event_type);
            let id = b.create_string(&d.event.id);
            let event = fb::DiscoverEvent::create(
                b,
                &fb::DiscoverEventArgs {
                    event_type: Some(event_type),
                    seq: d.event.seq,
                    id: Some(id),
                },
            );
            let suggestion = b.create_string(&d.suggestion);
            let animation = b.create_string(&d.animation);
            let t = fb::GonzaiDiscover::create(
                b,
                &fb::GonzaiDiscoverArgs {
                    event: Some(event),
                    relevance: d.relevance,
                    suggestion: Some(suggestion),
                    animation: Some(animation),
                },
            );
            (P::GonzaiDiscover, t.as_union_value())
        }
        Body::GonzaiSuggestion(d) => {
            let for_node = put_str(b, &d.for_node);
            let suggestions = d.suggestions.as_ref().map(|list| {
                let list: Vec<_> = list
                    .iter()
                    .map(|s| {
                        let target = b.create_string(&s.target);
                        let edge_type = b.create_string(&s.edge_type);
                        let reason = b.create_string(&s.reason);
                        fb::Suggestion::create(
                            b,
                            &fb::SuggestionArgs {
                                target: Some(target),
                                edge_type: Some(edge_type),
                                confidence: s.confidence,
                                reason: Some(reason),
                            },
                        )
                    })
                    .collect();
                b.create_vector(&list)
            });
            let t = fb::GonzaiSuggestion::create(
                b,
                &fb::GonzaiSuggestionArgs {
                    for_node,
                    limit: d.limit,
                    suggestions,
                },
            );
            (P::GonzaiSuggestion, t.as_union_value())
        }
        Body::ChaosTrigger(d) => {
            let initiator = put_str(b, &d.initiator);
            let message = put_str(b, &d.message);
            let t = fb::ChaosTrigger::create(
                b,
                &fb::ChaosTriggerArgs {
                    intensity: d.intensity,
                    initiator,
                    message,
                },
            );
            (P::ChaosTrigger, t.as_union_value())
        }
        Body::SystemHeartbeat(d) => {
            let t = fb::SystemHeartbeat::create(
                b,
                &fb::SystemHeartbeatArgs {
                    seq: d.seq,
                    server_time: d.server_time,
                },
            );
            (P::SystemHeartbeat, t.as_union_value())
        }
        Body::SystemError(d) => {
            let message = b.create_string(&d.message);
            let reference = put_str(b, &d.reference);
            let t = fb::SystemError::create(
                b,
                &fb::SystemErrorArgs {
                    code: Some(put_error_code(d.code)),
                    message: Some(message),
                    reference,
                    retry_after_ms: d.retry_after_ms,
                },
            );
            (P::SystemError, t.as_union_value())
        }
        Body::SystemReconnect(d) => {
            let reason = b.create_string(&d.reason);
            let t = fb::SystemReconnect::create(
                b,
                &fb::SystemReconnectArgs {
                    reason: Some(reason),
                    retry_after_ms: d.retry_after_ms,
                },
            );
            (P::SystemReconnect, t.as_union_value())
        }
    }
}

fn put_node_create<'b>(b: &mut B<'b>, d: &NodeCreate) -> WIPOffset<fb::NodeCreate<'b>> {
    let node = put_node(b, &d.node);
    let commit = put_str(b, &d.commit);
    fb::NodeCreate::create(
        b,
        &fb::NodeCreateArgs {
            base_seq: d.base_seq,
            node: Some(node),
            commit,
        },
    )
}

fn put_node_update<'b>(b: &mut B<'b>, d: &NodeUpdate) -> WIPOffset<fb::NodeUpdate<'b>> {
    let id = b.create_string(&d.id);
    let set = d.set.as_ref().map(|s| {
        let kind = put_str(b, &s.kind);
        let label = put_str(b, &s.label);
        let content = put_str(b, &s.content);
        let props = s.props.as_ref().map(|p| put_patch(b, p));
        fb::NodeSet::create(
            b,
            &fb::NodeSetArgs {
                kind,
                label,
                content,
                x: s.x,
                y: s.y,
                props,
            },
        )
    });
    let text = put_text(b, &d.text);
    let updated_by = put_str(b, &d.updated_by);
    let commit = put_str(b, &d.commit);
    fb::NodeUpdate::create(
        b,
        &fb::NodeUpdateArgs {
            base_seq: d.base_seq,
            id: Some(id),
            set,
            text,
            rev: d.rev,
            updated_at: d.updated_at,
            updated_by,
            commit,
        },
    )
}

fn put_node_delete<'b>(b: &mut B<'b>, d: &NodeDelete) -> WIPOffset<fb::NodeDelete<'b>> {
    let id = b.create_string(&d.id);
    let commit = put_str(b, &d.commit);
    fb::NodeDelete::create(
        b,
        &fb::NodeDeleteArgs {
            base_seq: d.base_seq,
            id: Some(id),
            commit,
        },
    )
}

fn put_edge_create<'b>(b: &mut B<'b>, d: &EdgeCreate) -> WIPOffset<fb::EdgeCreate<'b>> {
    let edge = put_edge(b, &d.edge);
    let commit = put_str(b, &d.commit);
    fb::EdgeCreate::create(
        b,
        &fb::EdgeCreateArgs {
            base_seq: d.base_seq,
            edge: Some(edge),
            commit,
        },
    )
}

fn put_edge_update<'b>(b: &mut B<'b>, d: &EdgeUpdate) -> WIPOffset<fb::EdgeUpdate<'b>> {
    let id = put_str(b, &d.id);
    let source = put_str(b, &d.source);
    let edge_type = put_str(b, &d.edge_type);
    let target = put_str(b, &d.target);
    let set = d.set.as_ref().map(|s| {
        let rationale = put_str(b, &s.rationale);
        let props = s.props.as_ref().map(|p| put_patch(b, p));
        fb::EdgeSet::create(
            b,
            &fb::EdgeSetArgs {
                confidence: s.confidence,
                rationale,
                bidirectional: s.bidirectional,
                props,
            },
        )
    });
    let updated_by = put_str(b, &d.updated_by);
    let commit = put_str(b, &d.commit);
    fb::EdgeUpdate::create(
        b,
        &fb::EdgeUpdateArgs {
            base_seq: d.base_seq,
            id,
            source,
            edge_type,
            target,
            set,
            rev: d.rev,
            updated_at: d.updated_at,
            updated_by,
            commit,
        },
    )
}

fn put_edge_delete<'b>(b: &mut B<'b>, d: &EdgeDelete) -> WIPOffset<fb::EdgeDelete<'b>> {
    let id = put_str(b, &d.id);
    let source = put_str(b, &d.source);
    let edge_type = put_str(b, &d.edge_type);
    let target = put_str(b, &d.target);
    let commit = put_str(b, &d.commit);
    fb::EdgeDelete::create(
        b,
        &fb::EdgeDeleteArgs {
            base_seq: d.base_seq,
            id,
            source,
            edge_type,
            target,
            commit,
        },
    )
}

fn put_graph_sync<'b>(b: &mut B<'b>, d: &GraphSync) -> WIPOffset<fb::GraphSync<'b>> {
    let epoch = put_str(b, &d.epoch);
    let nodes = d.nodes.as_ref().map(|list| {
        let list: Vec<_> = list.iter().map(|n| put_node(b, n)).collect();
        b.create_vector(&list)
    });
    let edges = d.edges.as_ref().map(|list| {
        let list: Vec<_> = list.iter().map(|e| put_edge(b, e)).collect();
        b.create_vector(&list)
    });
    let events = d.events.as_ref().map(|list| {
        let list: Vec<_> = list.iter().map(|e| put_envelope(b, e)).collect();
        b.create_vector(&list)
    });
    let presence = d.presence.as_ref().map(|list| {
        let list: Vec<_> = list
            .iter()
            .map(|p| {
                let user_id = b.create_string(&p.user_id);
                let session_id = b.create_string(&p.session_id);
                let presence = put_presence(b, &p.presence);
                let cursor = p.cursor.as_ref().map(|c| put_cursor(b, c));
                let selection = p.selection.as_ref().map(|s| put_selection(b, s));
                fb::PresenceState::create(
                    b,
                    &fb::PresenceStateArgs {
                        user_id: Some(user_id),
                        session_id: Some(session_id),
                        presence: Some(presence),
                        cursor,
                        selection,
                    },
                )
            })
            .collect();
        b.create_vector(&list)
    });
    let chunk = d.chunk.map(|c| fb::Chunk::new(c.index, c.count));
    let mode = d.mode.map(|m| match m {
        SyncMode::Snapshot => fb::SyncMode::Snapshot,
        SyncMode::Delta => fb::SyncMode::Delta,
    });
    fb::GraphSync::create(
        b,
        &fb::GraphSyncArgs {
            mode,
            epoch,
            seq: d.seq,
            since: d.since,
            nodes,
            edges,
            events,
            presence,
            heartbeat_ms: d.heartbeat_ms,
            chunk: chunk.as_ref(),
        },
    )
}

fn put_presence<'b>(b: &mut B<'b>, d: &UserPresence) -> WIPOffset<fb::UserPresence<'b>> {
    let status = match d.status {
        PresenceStatus::Active => fb::PresenceStatus::Active,
        PresenceStatus::Idle => fb::PresenceStatus::Idle,
        PresenceStatus::Away => fb::PresenceStatus::Away,
        PresenceStatus::Joined => fb::PresenceStatus::Joined,
        PresenceStatus::Left => fb::PresenceStatus::Left,
    };
    let focus = put_str(b, &d.focus);
    let display_name = put_str(b, &d.display_name);
    let color = put_str(b, &d.color);
    fb::UserPresence::create(
        b,
        &fb::UserPresenceArgs {
            status: Some(status),
            focus,
            display_name,
            color,
            chaos_affinity: d.chaos_affinity,
        },
    )
}

fn put_cursor<'b>(b: &mut B<'b>, d: &CursorMove) -> WIPOffset<fb::CursorMove<'b>> {
    let node_id = put_str(b, &d.node_id);
    fb::CursorMove::create(
        b,
        &fb::CursorMoveArgs {
            x: d.x,
            y: d.y,
            node_id,
        },
    )
}

fn put_selection<'b>(b: &mut B<'b>, d: &SelectionChange) -> WIPOffset<fb::SelectionChange<'b>> {
    let nodes = put_nonempty_strings(b, &d.nodes);
    let edges = put_nonempty_strings(b, &d.edges);
    fb::SelectionChange::create(b, &fb::SelectionChangeArgs { nodes, edges })
}

fn put_node<'b>(b: &mut B<'b>, n: &Node) -> WIPOffset<fb::Node<'b>> {
    let id = b.create_string(&n.id);
    let kind = put_str(b, &n.kind);
    let label = put_str(b, &n.label);
    let content = put_str(b, &n.content);
    let props = n.props.as_ref().map(|p| put_props(b, p));
    let created_by = put_str(b, &n.created_by);
    let updated_by = put_str(b, &n.updated_by);
    fb::Node::create(
        b,
        &fb::NodeArgs {
            id: Some(id),
            kind,
            label,
            content,
            x: n.x,
            y: n.y,
            props,
            rev: n.rev,
            created_at: n.created_at,
            updated_at: n.updated_at,
            created_by,
            updated_by,
        },
    )
}

fn put_edge<'b>(b: &mut B<'b>, e: &Edge) -> WIPOffset<fb::Edge<'b>> {
    let id = put_str(b, &e.id);
    let source = b.create_string(&e.source);
    let edge_type = b.create_string(&e.edge_type);
    let target = b.create_string(&e.target);
    let rationale = put_str(b, &e.rationale);
    let props = e.props.as_ref().map(|p| put_props(b, p));
    let created_by = put_str(b, &e.created_by);
    let updated_by = put_str(b, &e.updated_by);
    fb::Edge::create(
        b,
        &fb::EdgeArgs {
            id,
            source: Some(source),
            edge_type: Some(edge_type),
            target: Some(target),
            confidence: e.confidence,
            rationale,
            bidirectional: e.bidirectional,
            props,
            rev: e.rev,
            created_at: e.created_at,
            updated_at: e.updated_at,
            created_by,
            updated_by,
        },
    )
}

fn put_resolution<'b>(b: &mut B<'b>, r: &Resolution) -> WIPOffset<fb::Resolution<'b>> {
    let kind = put_str(b, &r.kind);
    let label = put_str(b, &r.label);
    let content = put_str(b, &r.content);
    let rationale = put_str(b, &r.rationale);
    let props = r.props.as_ref().map(|p| put_patch(b, p));
    let ops = r.ops.as_ref().map(|list| {
        let list: Vec<_> = list
            .iter()
            .map(|o| {
                let resolution = put_resolution(b, &o.resolution);
                fb::OpResolution::create(
                    b,
                    &fb::OpResolutionArgs {
                        index: o.index,
                        resolution: Some(resolution),
                    },
                )
            })
            .collect();
        b.create_vector(&list)
    });
    fb::Resolution::create(
        b,
        &fb::ResolutionArgs {
            kind,
            label,
            content,
            x: r.x,
            y: r.y,
            confidence: r.confidence,
            rationale,
            bidirectional: r.bidirectional,
            props,
            ops,
        },
    )
}

type PropList<'b> = WIPOffset<Vector<'b, ForwardsUOffset<fb::Prop<'b>>>>;

fn put_prop<'b>(b: &mut B<'b>, key: &str, value: Option<&PropValue>) -> WIPOffset<fb::Prop<'b>> {
    let key = b.create_string(key);
    let mut args = fb::PropArgs {
        key: Some(key),
        ..fb::PropArgs::default()
    };
    match value {
        Some(PropValue::String(s)) => args.string_value = Some(b.create_string(s)),
        Some(PropValue::Number(n)) => args.number_value = Some(*n),
        Some(PropValue::Bool(v)) => args.bool_value = Some(*v),
        None => {}
    }
    fb::Prop::create(b, &args)
}

fn put_props<'b>(b: &mut B<'b>, props: &Props) -> PropList<'b> {
    let list: Vec<_> = props.iter().map(|(k, v)| put_prop(b, k, Some(v))).collect();
    b.create_vector(&list)
}

fn put_patch<'b>(b: &mut B<'b>, props: &PropsPatch) -> PropList<'b> {
    let list: Vec<_> = props
        .iter()
        .map(|(k, v)| put_prop(b, k, v.as_ref()))
        .collect();
    b.create_vector(&list)
}

/// Text edits; counts too large for one `long` are split, as JSON splits
/// long deletes, and read back as one component.
fn put_text<'b>(b: &mut B<'b>, t: &Option<TextEdits>) -> Option<WIPOffset<fb::TextEdits<'b>>> {
    let t = t.as_ref()?;
    let content = t.content.as_ref().map(|op| {
        let mut list = Vec::with_capacity(op.components().len());
        for c in op.components() {
            match c {
                Component::Insert(s) => {
                    let insert = b.create_string(s);
                    list.push(fb::TextComponent::create(
                        b,
                        &fb::TextComponentArgs {
                            n: 0,
                            insert: Some(insert),
                        },
                    ));
                }
                Component::Retain(n) => {
                    let mut left = *n;
                    while left > 0 {
                        let chunk = left.min(i64::MAX.unsigned_abs());
                        // `chunk` is at most i64::MAX.
                        let n = i64::try_from(chunk).unwrap_or(i64::MAX);
                        list.push(fb::TextComponent::create(
                            b,
                            &fb::TextComponentArgs { n, insert: None },
                        ));
                        left -= chunk;
                    }
                }
                Component::Delete(n) => {
                    let mut left = *n;
                    while left > 0 {
                        let chunk = left.min(i64::MIN.unsigned_abs());
                        let n = 0i64.checked_sub_unsigned(chunk).unwrap_or(i64::MIN);
                        list.push(fb::TextComponent::create(
                            b,
                            &fb::TextComponentArgs { n, insert: None },
                        ));
                        left -= chunk;
                    }
                }
            }
        }
        b.create_vector(&list)
    });
    Some(fb::TextEdits::create(b, &fb::TextEditsArgs { content }))
}

fn put_reason(r: RollbackReason) -> fb::RollbackReason {
    use fb::RollbackReason as F;
    match r {
        RollbackReason::Invalid => F::Invalid,
        RollbackReason::NotFound => F::NotFound,
        RollbackReason::AlreadyExists => F::AlreadyExists,
        RollbackReason::Deleted => F::Deleted,
        RollbackReason::Forbidden => F::Forbidden,
        RollbackReason::RateLimited => F::RateLimited,
        RollbackReason::TooLarge => F::TooLarge,
        RollbackReason::Stale => F::Stale,
        RollbackReason::Unavailable => F::Unavailable,
    }
}

fn put_error_code(c: ErrorCode) -> fb::ErrorCode {
    use fb::ErrorCode as F;
    match c {
        ErrorCode::BadFrame => F::BadFrame,
        ErrorCode::Invalid => F::Invalid,
        ErrorCode::UnknownType => F::UnknownType,
        ErrorCode::RateLimited => F::RateLimited,
        ErrorCode::TooLarge => F::TooLarge,
        ErrorCode::Forbidden => F::Forbidden,
        ErrorCode::Internal => F::Internal,
    }
}
