//! Shards (docs/architecture.md, "Threads"): one OS thread per core,
//! pinned, each running a single-threaded tokio runtime. A connection is
//! accepted onto one shard and lives there all its life.
//!
//! The hub talks to a shard through its ring ([`ShardLink`]); the shard's
//! dispatcher drains it in order and appends the shared, already encoded
//! buffers to each local session's [`Outbox`].

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use gitmind_owner::SessionKey;
use gitmind_schema::{Codec, Limits, PerCodec};

use crate::fanout::{Released, ShardLink, ShardMsg};
use crate::frames::Part;
use crate::metrics::Metrics;
use crate::outbox::Outbox;
use crate::presence;

/// A shard's sessions and which graph each is on.
pub struct ShardState {
    /// This shard's index.
    pub index: usize,
    /// Every session on this shard, synced or not.
    sessions: HashMap<SessionKey, Rc<Outbox>>,
    /// Synced sessions per graph: those that receive events.
    graphs: HashMap<Arc<str>, Vec<SessionKey>>,
    metrics: Arc<Metrics>,
    /// The frame limits, which a run of events must fit.
    limits: Limits,
}

/// Shared handle to a shard's state, for its tasks.
pub type Shard = Rc<RefCell<ShardState>>;

impl ShardState {
    /// An empty shard, whose sessions write frames within `limits`.
    pub fn new(index: usize, metrics: Arc<Metrics>, limits: Limits) -> Shard {
        Rc::new(RefCell::new(ShardState {
            index,
            sessions: HashMap::new(),
            graphs: HashMap::new(),
            metrics,
            limits,
        }))
    }

    /// Registers a session; it receives events once its sync arrives.
    pub fn add(&mut self, session: SessionKey, outbox: Rc<Outbox>) {
        self.sessions.insert(session, outbox);
    }

    /// Wakes every session, for it to see that the server shuts down.
    pub fn wake_all(&self) {
        for outbox in self.sessions.values() {
            outbox.wake();
        }
    }

    /// Whether a session is registered here.
    #[cfg(test)]
    pub(crate) fn has(&self, session: SessionKey) -> bool {
        self.sessions.contains_key(&session)
    }

    /// Forgets a session.
    pub fn remove(&mut self, session: SessionKey, graph: &Arc<str>) {
        self.sessions.remove(&session);
        if let Some(list) = self.graphs.get_mut(graph) {
            list.retain(|s| *s != session);
            if list.is_empty() {
                self.graphs.remove(graph);
            }
        }
    }

    /// Applies one message from the hub.
    fn dispatch(&mut self, msg: ShardMsg) {
        match msg {
            ShardMsg::Sync {
                session,
                sync,
                presence,
                heartbeat_ms,
            } => {
                let Some(outbox) = self.sessions.get(&session) else {
                    return;
                };
                let graph = outbox.graph.clone();
                outbox.push_sync(sync, presence, heartbeat_ms);
                let list = self.graphs.entry(graph).or_default();
                if !list.contains(&session) {
                    list.push(session);
                }
            }
            ShardMsg::Committed { graph, items, at } => {
                let Some(list) = self.graphs.get(&graph) else {
                    return;
                };
                // Sessions that see the whole group as everyone does (no
                // outcome, region cut, extra or view of their own) take its
                // events as one run, laid out once per codec on this shard.
                let special = Special::of(&items);
                let mut runs: PerCodec<Option<Option<(Part, u64)>>> = PerCodec::default();
                for session in list {
                    let Some(outbox) = self.sessions.get(session) else {
                        continue;
                    };
                    if outbox.view.is_none() && !special.contains(session) {
                        let codec = outbox.codec;
                        let run =
                            runs[codec].get_or_insert_with(|| run_of(&items, codec, &self.limits));
                        if let Some((run, seq)) = run {
                            outbox.push_shared(run.clone(), *seq);
                            outbox.wake();
                            continue;
                        }
                    }
                    for item in items.iter() {
                        if item.recipients.contains(session) {
                            outbox.push_envelope(item.outcome().clone());
                        } else if let Some(bytes) =
                            item.event_for(*session, outbox.view.as_ref(), outbox.codec)
                        {
                            outbox.push_shared(Part::One(bytes.clone()), item.seq);
                        }
                        for extra in item.extras.get(session).into_iter().flatten() {
                            outbox.push_envelope(extra.clone());
                        }
                    }
                    outbox.wake();
                }
                // Outcomes for recipients that are not (yet) synced still go out.
                for item in items.iter() {
                    for session in &item.recipients {
                        if !list.contains(session) {
                            if let Some(outbox) = self.sessions.get(session) {
                                outbox.push_envelope(item.outcome().clone());
                                outbox.wake();
                            }
                        }
                    }
                }
                self.metrics.fanout_latency(at.elapsed());
            }
            ShardMsg::Refused { session, refusal } => {
                if let Some(outbox) = self.sessions.get(&session) {
                    outbox.refuse(refusal);
                }
            }
            ShardMsg::Outcome { session, outcome } => {
                if let Some(outbox) = self.sessions.get(&session) {
                    outbox.push_envelope(outcome);
                    outbox.wake();
                }
            }
            ShardMsg::Digest { graph, notices } => {
                let Some(list) = self.graphs.get(&graph) else {
                    return;
                };
                for session in list {
                    if let Some(outbox) = self.sessions.get(session) {
                        outbox.push_notices(*session, &notices);
                        outbox.wake();
                    }
                }
            }
            ShardMsg::Ephemeral {
                graph,
                from,
                kind,
                encoded,
            } => {
                let Some(list) = self.graphs.get(&graph) else {
                    return;
                };
                let outboxes = list
                    .iter()
                    .filter_map(|s| Some((*s, &**self.sessions.get(s)?)));
                presence::relay(outboxes, from, kind, &encoded);
            }
        }
    }
}

/// The sessions that see part of a commit group in a way of their own:
/// its senders, who get outcomes, and those with region cuts or extras.
/// Sorted, for [`Special::contains`].
struct Special(Vec<SessionKey>);

impl Special {
    fn of(items: &[Released]) -> Self {
        let mut special = Vec::new();
        for item in items {
            special.extend(item.recipients.iter().copied());
            special.extend(item.extras.keys().copied());
        }
        // The same map for every item of a group.
        if let Some(first) = items.first() {
            special.extend(first.groups.keys().copied());
        }
        special.sort_unstable();
        special.dedup();
        Special(special)
    }

    /// A binary search: cheaper per session than hashing.
    fn contains(&self, session: &SessionKey) -> bool {
        self.0.binary_search(session).is_ok()
    }
}

/// The events of a commit group in `codec` joined as one run, with the
/// `seq` of the last; `None` when there are none in `codec`, or more than
/// one frame may hold (then each goes on its own).
fn run_of(items: &[Released], codec: Codec, limits: &Limits) -> Option<(Part, u64)> {
    let events = || {
        items
            .iter()
            .filter_map(|i| Some((i.seq, i.event[codec].as_ref()?)))
    };
    let (count, len, seq) = events().fold((0, 0, 0), |(n, len, _), (seq, e)| {
        (n + 1, len + e.len(), seq)
    });
    // JSON's brackets and commas count in the frame limit.
    if count == 0 || count > limits.max_envelopes || len + count + 1 > limits.max_frame_bytes {
        return None;
    }
    Some((Part::run(codec, events().map(|(_, e)| e)), seq))
}

/// The shard's dispatcher: drains the ring in order, forever (until its
/// runtime stops).
pub async fn dispatch_loop(shard: Shard, link: ShardLink) {
    loop {
        link.ready().await;
        while let Some(msg) = link.pop() {
            shard.borrow_mut().dispatch(msg);
        }
    }
}
