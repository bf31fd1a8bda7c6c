//! The graph owner (docs/architecture.md): the single place where one
//! graph's changes are validated, ordered, merged with concurrent changes and
//! applied, as pure logic: mutations in, outcomes and events out, no I/O, no
//! clock, no thread.
//!
//! # Flow
//!
//! 1. [`Owner::submit`] validates a mutation (docs/protocol.md 3), resolves it
//!    against concurrent changes (4.2), applies it to the live graph and
//!    gives it the next `seq` ([`Submit::Ordered`]); or refuses it at once
//!    ([`Submit::Reply`] with `update.rollback`). A repeated mutation id gets
//!    its original outcome (4.4).
//! 2. [`Owner::take_group`] hands the changes ordered since its last call to
//!    the git persistence thread.
//! 3. [`Owner::committed`] is told when they are in git, and releases each
//!    change's outcome to its sender and its event to everyone else, both
//!    carrying the commit; [`Owner::commit_failed`] undoes every uncommitted
//!    change instead, and answers each with `update.rollback` `unavailable`.
//! 4. [`Owner::sync`] answers `graph.sync` as of the committed `seq`: never
//!    showing a change that is not yet in git.
//!
//! # Data structures
//!
//! - The live graph (`graph::Live`) is a set of plain hash maps, changed
//!   in place; every change records undo steps so a failing batch op or a
//!   failed commit can be undone exactly.
//! - The committed graph is a pair of persistent maps (`imbl`) of shared
//!   nodes and edges, updated from each committed change's writes, so a
//!   snapshot for `graph.sync` is an O(1) clone the caller can walk and
//!   encode off the owner's thread.
//! - The replay window, the text histories, the tombstones and the index of
//!   mutation ids hold at least the last `replay_changes` changes or
//!   `replay_ms` of them, whichever is more, and no more.
//! - Every hash map hashes with foldhash seeded by [`OwnerConfig::hash_seed`]
//!   ([`Hasher`]): the same seed and input give the same state in the same
//!   order, so a simulation replays exactly.
//!
//! # Modules
//!
//! - [`change`]: the record of one ordered change, as persistence takes it.
//! - `submit`: taking a mutation, or refusing it.
//! - `graph`: the live graph; how one op is applied, stamped and undone.
//! - `history`: the replay window, text histories, the idempotency index
//!   and the remembered rollbacks.
//! - `release`: groups to persistence, commits released, failures undone.
//! - `snapshot`: `graph.sync` as a snapshot or a delta.
//! - `restore`: rebuilding an owner after a restart.
//! - [`validate`]: the rules of protocol section 3.

pub mod change;
mod graph;
mod history;
mod release;
mod restore;
mod snapshot;
mod submit;
pub mod validate;

pub use snapshot::{Entities, IntoIter, Keyed, SyncData};

use std::collections::{HashMap, VecDeque};

use imbl::shared_ptr::DefaultSharedPtr;
use std::sync::Arc;

use gitmind_schema::model::{Edge, Node};
use gitmind_schema::Envelope;

use crate::change::ChangeRecord;
use crate::graph::{Actor, Live};
use crate::history::{Idempotency, Refused, Window};

/// How an owner behaves; `Default` gives the protocol's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerConfig {
    /// The edge types an edge may have (docs/protocol.md 3): by default the 12
    /// of the protocol; a deployment may add more.
    pub edge_types: Vec<String>,
    /// The replay window keeps at least this many changes...
    pub replay_changes: usize,
    /// ...or the changes of at least this many milliseconds, whichever is more.
    pub replay_ms: u64,
    /// The most ops in one `batch.update`.
    pub max_batch_ops: usize,
    /// The largest event or outcome, in bytes of either codec (the frame
    /// limit): a change whose event would be larger is refused.
    pub max_event_bytes: usize,
    /// The seed of every map's hasher ([`Hasher`]): the same seed and the
    /// same input give the same maps in the same order (a snapshot lists
    /// nodes in the same order). A server picks a random one at start, so
    /// that ids chosen by clients do not hash alike on every server
    /// (foldhash is only minimally resistant to crafted collisions).
    pub hash_seed: u64,
}

/// How the owner's maps hash: foldhash, seeded by [`OwnerConfig::hash_seed`].
pub type Hasher = foldhash::fast::FixedState;

/// A hash map of the owner.
pub(crate) type Map<K, V> = HashMap<K, V, Hasher>;

/// A persistent map of committed entities by id.
type Committed<T> = imbl::GenericHashMap<Arc<str>, Arc<T>, Hasher, DefaultSharedPtr>;

impl Default for OwnerConfig {
    fn default() -> Self {
        OwnerConfig {
            edge_types: validate::DEFAULT_EDGE_TYPES
                .iter()
                .map(|t| (*t).to_owned())
                .collect(),
            replay_changes: 100_000,
            replay_ms: 600_000,
            max_batch_ops: 1000,
            max_event_bytes: gitmind_schema::Limits::default().max_frame_bytes,
            hash_seed: 0,
        }
    }
}

/// The server's handle of a session; opaque to the owner, which only hands
/// it back in [`Release::recipients`] and [`Owner::commit_failed`].
pub type SessionKey = u64;

/// Who sent a mutation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The server's handle of the session.
    pub session: SessionKey,
    /// The session's protocol id (`sessionId`).
    pub session_id: String,
    /// The session's user (`userId`).
    pub user_id: String,
}

/// What became of a submitted mutation.
// The envelope is not boxed: the API is shared with the server, and a
// `Submit` is moved once, straight to the sender.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Submit {
    /// Ordered as this `seq`; its outcome comes out of [`Owner::committed`]
    /// (or [`Owner::commit_failed`]). Also the answer to a repeat of a
    /// mutation that is still waiting for its commit: the repeating session
    /// then receives the outcome too.
    Ordered(u64),
    /// Send this outcome to the sender now: a rollback, or the original
    /// outcome of a repeated, already committed mutation.
    Reply(Envelope),
}

/// A committed change, ready to send.
#[derive(Debug, Clone, PartialEq)]
pub struct Release {
    /// The change's `seq`.
    pub seq: u64,
    /// Who receives the outcome: the sender, and any session of the same
    /// user that repeated the mutation id while it waited for its commit.
    /// Every other session of the graph receives the event.
    pub recipients: Vec<SessionKey>,
    /// The change as ordered, its commit filled in: its outcome and event
    /// ([`Release::outcome`], [`Release::event`]), and among others the
    /// state after it of every entity it touched (`writes`), for what is
    /// derived from the graph change by change (the server's regions).
    /// Shared with the replay window: nothing is copied to release it.
    pub record: Arc<ChangeRecord>,
}

impl Release {
    /// `update.confirmed` or `update.conflict_resolved`, with `commit`. Its
    /// `sessionId` is the sender's; a server that sends it to a repeating
    /// session may put that session's id there.
    pub fn outcome(&self) -> &Envelope {
        &self.record.outcome
    }

    /// The graph event, with `commit` in its data.
    pub fn event(&self) -> &Envelope {
        &self.record.event
    }
}

/// A followed change that is not the next `seq` ([`Owner::follow`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("change {got} does not follow the replica's seq {have}")]
pub struct FollowGap {
    /// The replica's committed `seq`.
    pub have: u64,
    /// The change's `seq`.
    pub got: u64,
}

/// A change ordered but not yet committed.
#[derive(Debug)]
struct Pending {
    /// The change.
    record: Arc<ChangeRecord>,
    /// How to undo it if its commit fails.
    undo: Vec<graph::Undo>,
    /// Who receives its outcome.
    recipients: Vec<SessionKey>,
}

/// The most sessions whose actor is cached before the cache is cleared.
const MAX_CACHED_ACTORS: usize = 65_536;

/// The owner of one graph. See the [module documentation](self).
#[derive(Debug)]
pub struct Owner {
    graph: String,
    epoch: String,
    config: OwnerConfig,
    live: Live,
    committed_nodes: Committed<Node>,
    committed_edges: Committed<Edge>,
    ordered_seq: u64,
    committed_seq: u64,
    /// Uncommitted changes, in `seq` order (the first is `committed_seq + 1`).
    pending: VecDeque<Pending>,
    /// How many of `pending` were handed out by `take_group`.
    taken: usize,
    window: Window,
    idempotency: Idempotency,
    /// The rollbacks given within the window, for resent ids (4.4).
    refused: Refused,
    actors: Map<SessionKey, Actor>,
    /// The latest time seen, for the window's time bound.
    now_ms: u64,
    /// Counter for rollback ids.
    rollbacks: u64,
}

impl Owner {
    /// An owner of an empty graph.
    pub fn new(graph: &str, epoch: String, config: OwnerConfig) -> Owner {
        let hasher = Hasher::with_seed(config.hash_seed);
        Owner {
            graph: graph.to_owned(),
            epoch,
            config,
            live: Live::with_hasher(&hasher),
            committed_nodes: Committed::with_hasher(hasher.clone()),
            committed_edges: Committed::with_hasher(hasher.clone()),
            ordered_seq: 0,
            committed_seq: 0,
            pending: VecDeque::new(),
            taken: 0,
            window: Window::default(),
            idempotency: Idempotency::with_hasher(hasher.clone()),
            refused: Refused::with_hasher(hasher.clone()),
            actors: Map::with_hasher(hasher),
            now_ms: 0,
            rollbacks: 0,
        }
    }

    /// The graph's name.
    pub fn graph(&self) -> &str {
        &self.graph
    }

    /// The graph's epoch.
    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    /// The last `seq` known to be in git.
    pub fn committed_seq(&self) -> u64 {
        self.committed_seq
    }

    /// The last `seq` given to a change (committed or not).
    pub fn ordered_seq(&self) -> u64 {
        self.ordered_seq
    }

    /// The configuration.
    pub fn config(&self) -> &OwnerConfig {
        &self.config
    }

    /// How many rollbacks are remembered for resent ids.
    pub fn remembered_rollbacks(&self) -> usize {
        self.refused.len()
    }
}

#[cfg(test)]
mod tests;
