//! Git persistence (docs/architecture.md, docs/protocol.md 12): one OS thread
//! owns one bare git repository, commits the graph owners' ordered changes
//! in group commits, and reads graphs back: on demand ([`Persister::open`]
//! lists the graphs, [`Persister::load`] reads one, [`Persister::unload`]
//! forgets one), or every graph at start ([`Persister::start`]).
//!
//! # Layout on disk
//!
//! `data_dir/graphs.git` is a bare repository (the data directory may hold
//! other things later). Graph `{graph}` lives at `refs/gitmind/graphs/{graph}`;
//! its tree has one canonical JSON file per node and per edge in fan-out
//! folders (see [`layout`] for the paths and the escaping of ids); each
//! commit's message carries its changes' journal and the trailers
//! `Gitmind-Seq`, `Gitmind-Epoch`, `Gitmind-Format` (see [`journal`]). Plain
//! git reads all of it: `git --git-dir data/graphs.git log -p refs/gitmind/graphs/NAME`.
//!
//! # Group commit
//!
//! [`Persister::submit`] queues a [`Group`]; the thread takes everything
//! queued (for every graph) in one round, and writes per graph one commit
//! holding all of its consecutive changes (split every
//! [`PersistConfig::max_group_changes`]). All objects of the round go into
//! ONE pack, written by hand (no loose objects, no delta search), flushed
//! once; then each graph's ref is moved (compare-and-swap on the previous
//! tip) and flushed; then [`PersistEvent::Committed`] is sent. Only the
//! folders on the touched paths are rewritten (see [`tree`]), so the cost of
//! a commit does not grow with the graph.
//!
//! # Failure
//!
//! When a round cannot be made durable (disk full, I/O error, the ref was
//! moved by someone else), no ref moves and [`PersistEvent::Failed`] names
//! the first `seq` lost: the owner rolls back that change and every later
//! one, and answers `unavailable`. The thread keeps serving: groups of that
//! graph that were handed over before the owner rolled back are dropped
//! silently (the `Failed` covers them), and the graph resumes with the first
//! group that starts right after the last committed `seq`.
//!
//! # Packs
//!
//! Every round adds one pack. When more than [`PersistConfig::max_packs`]
//! small packs exist, a background thread merges the smallest into one
//! (geometric: each object is copied O(log n) times) by copying their
//! packed objects as they are: no inflate, no delta search, and never in
//! the way of a commit (see `repack`). Packs of 32 MiB or more are left as
//! they are; a person's `git gc`, run while the server is stopped, compacts
//! history with deltas and compression.
//!
//! # Loading on demand
//!
//! The hub never reads git: it asks this thread to [`Persister::load`] a
//! graph and is answered with [`Loaded`] on the channel it gave. Requests
//! are taken in order with the groups, and a round's loads run after its
//! commits, so a load never holds up the commits queued before it. Loading
//! a graph also rebuilds what this thread keeps of it (its committed tree);
//! [`Persister::unload`] drops that again once the hub has released the
//! graph, which it does only when every change it handed over has been
//! answered. A group of that graph still queued then is one a `Failed`
//! already covers, and it is dropped as usual.
//!
//! # Epochs
//!
//! The server chooses a new graph's epoch; it is stored with the graph's
//! first commit (trailer `Gitmind-Epoch`), so there is no separate call. A
//! graph with no commit does not exist on disk. A group whose epoch differs
//! from the last commit's starts a new history: the replay window stops at
//! the change of epoch.
//!
//! # Process-wide libgit2 settings
//!
//! [`Persister::start`] turns off libgit2's object cache, its re-hashing of
//! every object read and its object lookup before a ref moves (only
//! persistence uses libgit2; see the comments there); [`verify`] turns the
//! re-hashing back on.
//!
//! # Cost
//!
//! Objects under 64 KiB are stored uncompressed (zlib cost more than half
//! of a commit's time). A commit of 100 node updates on the 338,000-entity
//! Debian graph writes about 400 objects, 300 KiB: see
//! `perf-reports/git.md`.

mod commit;
mod error;
pub mod journal;
pub mod layout;
mod load;
mod object;
mod pack;
mod refs;
mod repack;
mod stats;
pub mod tree;
mod verify;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam::channel::{self, Receiver, Sender};
use git2::Repository;

use self::commit::{Built, Chunk, GraphState};
use self::object::ObjectId;
use self::pack::{sync_dir, PackWriter};
use gitmind_owner::change::{Group, Restored};

pub use self::commit::REF_PREFIX;
pub use self::error::{CommitError, LoadError, OpenError, ThreadGone, VerifyError};
pub use self::stats::{PersistStats, StatsSnapshot, DURATION_BUCKETS_US};
pub use self::verify::{verify, GraphReport, VerifyReport};

/// The bare repository's folder inside the data directory.
pub const REPO_DIR: &str = "graphs.git";

/// How persistence runs.
#[derive(Debug, Clone)]
pub struct PersistConfig {
    /// The data directory; the repository is `data_dir/graphs.git`.
    pub data_dir: PathBuf,
    /// Flush packs and refs to disk before confirming (docs/protocol.md 12).
    /// Off only for tests and benchmarks.
    pub fsync: bool,
    /// The replay window holds at least this many changes...
    pub replay_changes: usize,
    /// ...and at least every change this many milliseconds before the newest.
    pub replay_ms: u64,
    /// The most changes in one commit; a larger round is split into several
    /// commits (same pack).
    pub max_group_changes: usize,
    /// The most changes waiting for the thread; a group submitted beyond it
    /// fails at once (see [`Persister::submit`]).
    pub max_queued_changes: usize,
    /// Pack files tolerated before the smallest are merged.
    pub max_packs: usize,
    /// Several servers share the repository (a cluster, docs/scale-out.md):
    /// the ref locks found at start may be another server's, and are left;
    /// a server that takes a graph over removes that graph's
    /// ([`Persister::take_over`]).
    pub shared: bool,
}

impl PersistConfig {
    /// The defaults (docs/protocol.md 6 and 12) for a data directory.
    pub fn new(data_dir: impl Into<PathBuf>) -> PersistConfig {
        PersistConfig {
            data_dir: data_dir.into(),
            fsync: true,
            replay_changes: 100_000,
            replay_ms: 600_000,
            max_group_changes: 10_000,
            max_queued_changes: 200_000,
            max_packs: 32,
            shared: false,
        }
    }

    /// The bare repository's path.
    pub fn repo_path(&self) -> PathBuf {
        self.data_dir.join(REPO_DIR)
    }
}

/// What the thread reports about submitted changes, in order per graph.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PersistEvent {
    /// Every change of `graph` up to `upto` (after the previous `Committed`)
    /// is durable in `commit`; the owner confirms and broadcasts them.
    Committed {
        /// The graph.
        graph: String,
        /// The last `seq` the commit holds.
        upto: u64,
        /// The commit's full hex id (40 digits).
        commit: String,
    },
    /// The changes of `graph` from `from_seq` on are not committed and never
    /// will be: the owner rolls them (and every later change) back.
    Failed {
        /// The graph.
        graph: String,
        /// The first `seq` lost.
        from_seq: u64,
        /// Why, for logs (not for clients).
        error: CommitError,
    },
}

/// A graph read back on demand ([`Persister::load`]).
#[derive(Debug)]
pub struct Loaded {
    /// The graph asked for.
    pub graph: String,
    /// The graph as committed, with its replay window; `None` when the
    /// repository has no such graph.
    pub result: Result<Option<Restored>, LoadError>,
}

/// What the thread takes from its queue.
enum Msg {
    /// Changes to commit.
    Group(Group),
    /// Read a graph back, answering on `reply`.
    Load {
        graph: String,
        reply: Sender<Loaded>,
        /// Remove the graph's stale ref lock first ([`Persister::take_over`]).
        take_over: bool,
    },
    /// Forget what the thread keeps of a graph the hub released.
    Unload(String),
    /// A group that `submit` refused (queue full): fails in order with the
    /// groups before it.
    Refused {
        graph: String,
        from_seq: u64,
        error: CommitError,
    },
    /// Commit what is queued, then stop.
    Shutdown,
}

/// The handle of the persistence thread.
///
/// Dropping it commits what is queued and joins the thread, like
/// [`Persister::shutdown`] without the error.
pub struct Persister {
    tx: Sender<Msg>,
    thread: Option<JoinHandle<()>>,
    stats: Arc<PersistStats>,
    /// For `Failed` when the thread is gone.
    events: Sender<PersistEvent>,
    max_queued: u64,
}

impl Persister {
    /// Opens (or creates) the bare repository in `config.data_dir`, loads
    /// every graph, and starts the thread, which reports on `events` (an
    /// unbounded channel is best: the thread blocks while it is full).
    ///
    /// # Errors
    /// The repository cannot be opened or created, or a graph cannot be
    /// loaded (damaged: the server must not start on half a graph).
    pub fn start(
        config: PersistConfig,
        events: Sender<PersistEvent>,
    ) -> Result<(Persister, Vec<Restored>), OpenError> {
        let started = Instant::now();
        let repo = open_repository(&config)?;
        let loaded = load::load_all(&repo, &config)?;
        // The thread writes packs and refs by hand: it needs no libgit2 handle.
        drop(repo);
        let mut graphs = HashMap::new();
        let mut restored = Vec::with_capacity(loaded.len());
        for (r, state) in loaded {
            graphs.insert(state.name.clone(), state);
            restored.push(r);
        }
        tracing::info!(
            graphs = restored.len(),
            ms = started.elapsed().as_millis() as u64,
            "persistence started"
        );
        Ok((Persister::launch(config, events, graphs)?, restored))
    }

    /// Opens (or creates) the bare repository like [`Persister::start`],
    /// but only lists its graphs: each is read when asked for
    /// ([`Persister::load`]). Returns the names of the graphs in the
    /// repository, sorted.
    ///
    /// # Errors
    /// The repository cannot be opened or created, or its refs read.
    pub fn open(
        config: PersistConfig,
        events: Sender<PersistEvent>,
    ) -> Result<(Persister, Vec<String>), OpenError> {
        let repo = open_repository(&config)?;
        let names: Vec<String> = load::graph_refs(&repo)?
            .into_iter()
            .map(|(name, _)| name)
            .collect();
        drop(repo);
        tracing::info!(graphs = names.len(), "persistence started");
        Ok((Persister::launch(config, events, HashMap::new())?, names))
    }

    /// Starts the thread (and the pack merger) over the graphs it knows.
    fn launch(
        config: PersistConfig,
        events: Sender<PersistEvent>,
        graphs: HashMap<String, GraphState>,
    ) -> Result<Persister, OpenError> {
        let stats = Arc::new(PersistStats::default());
        let (tx, rx) = channel::unbounded();
        let pack_dir = config.repo_path().join("objects").join("pack");
        let packs = pack::list_packs(&pack_dir)
            .map_err(|e| OpenError::io(format!("listing {}", pack_dir.display()), e))?
            .iter()
            .filter(|(_, size)| *size < repack::MAX_MERGE_BYTES)
            .count();
        let merger = repack::Merger::start(
            pack_dir.clone(),
            config.max_packs,
            config.fsync,
            packs,
            Arc::clone(&stats),
        )
        .map_err(|e| OpenError::io("starting the pack merging thread", e))?;
        let worker = Worker {
            merger,
            pack_dir,
            repo_path: config.repo_path(),
            config: config.clone(),
            graphs,
            rx,
            events: events.clone(),
            stats: Arc::clone(&stats),
        };
        let thread = std::thread::Builder::new()
            .name("gitmind-persist".into())
            .spawn(move || worker.run())
            .map_err(|e| OpenError::io("starting the persistence thread", e))?;
        let max_queued = config.max_queued_changes as u64;
        Ok(Persister {
            tx,
            thread: Some(thread),
            stats,
            events,
            max_queued,
        })
    }

    /// Hands a group of consecutive changes of one graph to the thread.
    ///
    /// Never blocks: the queue is bounded by
    /// [`PersistConfig::max_queued_changes`] changes; a group beyond it (or
    /// submitted after the thread stopped) is refused, and the thread
    /// reports [`PersistEvent::Failed`] for it in order, exactly as if its
    /// commit had failed. A single group larger than the bound is taken when
    /// the queue is empty.
    pub fn submit(&self, group: Group) {
        let Some(first) = group.changes.first() else {
            return;
        };
        let from_seq = first.seq;
        let n = group.changes.len() as u64;
        let queued = self.stats.queued();
        let before = queued.fetch_add(n, Ordering::AcqRel);
        let msg = if before > 0 && before + n > self.max_queued {
            queued.fetch_sub(n, Ordering::AcqRel);
            Msg::Refused {
                graph: group.graph,
                from_seq,
                error: CommitError::QueueFull { waiting: before },
            }
        } else {
            Msg::Group(group)
        };
        if let Err(channel::SendError(msg)) = self.tx.send(msg) {
            let graph = match msg {
                Msg::Group(g) => {
                    queued.fetch_sub(n, Ordering::AcqRel);
                    g.graph
                }
                Msg::Refused { graph, .. } => graph,
                Msg::Load { .. } | Msg::Unload(_) | Msg::Shutdown => return,
            };
            let _ = self.events.send(PersistEvent::Failed {
                graph,
                from_seq,
                error: CommitError::Stopped,
            });
        }
    }

    /// Asks the thread to read `graph` back from git, after what is
    /// queued before; the answer comes on `reply`. Never blocks. When the
    /// thread has stopped, the answer is [`LoadError::Stopped`], at once.
    pub fn load(&self, graph: &str, reply: &Sender<Loaded>) {
        self.send_load(graph, reply, false);
    }

    /// [`Persister::load`] for a server that has just become the graph's
    /// owner in a cluster (its lease): a lock on the graph's ref is one its
    /// previous owner left when it died, and is removed first, else every
    /// commit would fail.
    pub fn take_over(&self, graph: &str, reply: &Sender<Loaded>) {
        self.send_load(graph, reply, true);
    }

    fn send_load(&self, graph: &str, reply: &Sender<Loaded>, take_over: bool) {
        let msg = Msg::Load {
            graph: graph.to_owned(),
            reply: reply.clone(),
            take_over,
        };
        if let Err(channel::SendError(Msg::Load { graph, reply, .. })) = self.tx.send(msg) {
            let _ = reply.send(Loaded {
                graph,
                result: Err(LoadError::Stopped),
            });
        }
    }

    /// Tells the thread to forget what it keeps of `graph` (its committed
    /// tree). Only for a graph whose every change handed over has been
    /// answered (`Committed` or `Failed`): the next change of it must come
    /// after a [`Persister::load`] again, or start a new graph.
    pub fn unload(&self, graph: &str) {
        let _ = self.tx.send(Msg::Unload(graph.to_owned()));
    }

    /// The thread's counters, for `/metrics`.
    pub fn stats(&self) -> Arc<PersistStats> {
        Arc::clone(&self.stats)
    }

    /// Commits what is queued, then stops the thread and waits for it.
    ///
    /// # Errors
    /// [`ThreadGone`] when the thread had panicked.
    pub fn shutdown(mut self) -> Result<(), ThreadGone> {
        self.stop()
    }

    fn stop(&mut self) -> Result<(), ThreadGone> {
        let Some(thread) = self.thread.take() else {
            return Ok(());
        };
        let _ = self.tx.send(Msg::Shutdown);
        thread.join().map_err(|_| ThreadGone)
    }
}

impl Drop for Persister {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            tracing::error!(error = %e, "persistence thread ended badly");
        }
    }
}

/// Sets libgit2 up for this module and opens the bare repository (creating
/// it if needed), with stale ref locks removed.
fn open_repository(config: &PersistConfig) -> Result<Repository, OpenError> {
    // Reading 300,000 blobs, libgit2 would hash each again (SHA-1DC, a
    // third of the start-up time). Packs are written and checked by this
    // module; `verify` turns the check back on. Process-wide, and only
    // persistence uses libgit2.
    git2::opts::strict_hash_verification(false);
    // Moving a ref would look its commit up first, re-scanning the packs;
    // the commit is in the pack just written and flushed.
    git2::opts::strict_object_creation(false);
    // Loading reads each object once; caching the ~100,000 trees would
    // only hold memory for the life of the process.
    git2::opts::enable_caching(false);
    let repo = open_or_init(config)?;
    if !config.shared {
        remove_stale_locks(&config.repo_path().join(commit::REF_PREFIX));
    }
    Ok(repo)
}

/// Opens the bare repository, creating it (and the data directory) if needed.
fn open_or_init(config: &PersistConfig) -> Result<Repository, OpenError> {
    let path = config.repo_path();
    let open_err = |source| OpenError::Open {
        path: path.clone(),
        source,
    };
    if path.exists() {
        return Repository::open_bare(&path).map_err(open_err);
    }
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| OpenError::io(format!("creating {}", config.data_dir.display()), e))?;
    let repo = Repository::init_opts(
        &path,
        git2::RepositoryInitOptions::new()
            .bare(true)
            .description("Gitmind live graphs (refs/gitmind/graphs/*)"),
    )
    .map_err(open_err)?;
    {
        let mut cfg = repo.config().map_err(open_err)?;
        // The server is the only writer: no reflogs, and a person's `git`
        // must not start a gc under it.
        cfg.set_bool("core.logAllRefUpdates", false)
            .map_err(open_err)?;
        cfg.set_i32("gc.auto", 0).map_err(open_err)?;
    }
    let pack_dir = path.join("objects").join("pack");
    std::fs::create_dir_all(&pack_dir)
        .map_err(|e| OpenError::io(format!("creating {}", pack_dir.display()), e))?;
    if config.fsync {
        for dir in [
            &pack_dir,
            &path.join("objects"),
            &path.join("refs"),
            &path,
            &config.data_dir,
        ] {
            sync_dir(dir).map_err(|e| OpenError::io(format!("syncing {}", dir.display()), e))?;
        }
    }
    Ok(repo)
}

/// Removes `*.lock` files a crash left beside the graphs' refs: this
/// process is their only writer, and a stale lock would fail every commit
/// of its graph.
fn remove_stale_locks(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "lock") {
            tracing::warn!(path = %path.display(), "removing a stale ref lock");
            if let Err(e) = std::fs::remove_file(&path) {
                tracing::error!(path = %path.display(), error = %e, "cannot remove a stale ref lock");
            }
        }
    }
}

/// Whether a graph name can be stored: docs/protocol.md 1's pattern, and a valid
/// git ref (which refuses e.g. `a..b`, `a.lock`, `a.`).
pub fn is_valid_graph_name(name: &str) -> bool {
    let b = name.as_bytes();
    let pattern = !b.is_empty()
        && b.len() <= 64
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'.' | b'_' | b'-')
        });
    // git's ref rules that the pattern lets through (git check-ref-format):
    // no "..", no trailing "." and no ".lock" suffix.
    let git = !name.contains("..") && !name.ends_with('.') && !name.ends_with(".lock");
    pattern && git && git2::Reference::is_valid_name(&format!("{}{name}", commit::REF_PREFIX))
}

/// Whether an epoch can go in a trailer: printable, one line, no spaces at
/// its ends, at most 128 bytes.
fn is_valid_epoch(epoch: &str) -> bool {
    !epoch.is_empty()
        && epoch.len() <= 128
        && epoch.trim() == epoch
        && !epoch.chars().any(char::is_control)
}

/// What one round will do for one graph.
#[derive(Default)]
struct Plan {
    /// Accepted changes, cut into commits.
    chunks: Vec<Chunk>,
    /// How many changes the chunks hold.
    count: u64,
    /// The first refused `seq` of this round and why.
    failure: Option<(u64, CommitError)>,
}

/// What a round leaves to do after its commits.
struct Round {
    /// The batch held `Shutdown`.
    shutdown: bool,
    /// Graphs to read, where to answer, and whether to take them over.
    loads: Vec<(String, Sender<Loaded>, bool)>,
}

/// The persistence thread's state.
struct Worker {
    /// Merges small packs in the background.
    merger: repack::Merger,
    repo_path: PathBuf,
    pack_dir: PathBuf,
    config: PersistConfig,
    graphs: HashMap<String, GraphState>,
    rx: Receiver<Msg>,
    events: Sender<PersistEvent>,
    stats: Arc<PersistStats>,
}

impl Worker {
    fn run(mut self) {
        let mut shutdown = false;
        while !shutdown {
            let Ok(first) = self.rx.recv() else { break };
            let mut batch = vec![first];
            // Take everything queued now: that is the group commit.
            while batch.len() < 100_000 {
                let Ok(m) = self.rx.try_recv() else { break };
                batch.push(m);
            }
            let round = self.round(batch);
            shutdown = round.shutdown;
            if shutdown {
                // The hub is stopping: nobody waits for these.
                break;
            }
            for (graph, reply, take_over) in round.loads {
                if take_over {
                    let lock = self
                        .repo_path
                        .join(format!("{}{graph}.lock", commit::REF_PREFIX));
                    if lock.exists() {
                        tracing::warn!(path = %lock.display(), "removing the ref lock a dead owner left");
                        if let Err(e) = std::fs::remove_file(&lock) {
                            tracing::error!(path = %lock.display(), error = %e, "cannot remove a stale ref lock");
                        }
                    }
                }
                let result = self.load(&graph);
                let _ = reply.send(Loaded { graph, result });
            }
        }
        tracing::info!("persistence thread stopped");
    }

    /// Commits one batch of messages; returns whether it held `Shutdown`,
    /// and its load requests, to run after its commits.
    fn round(&mut self, batch: Vec<Msg>) -> Round {
        let mut order: Vec<String> = Vec::new();
        let mut plans: HashMap<String, Plan> = HashMap::new();
        let mut shutdown = false;
        let mut loads = Vec::new();
        for msg in batch {
            match msg {
                Msg::Load {
                    graph,
                    reply,
                    take_over,
                } => loads.push((graph, reply, take_over)),
                Msg::Unload(graph) => {
                    // Everything the hub handed over for it is answered: a
                    // group still in this batch is one a failure covers,
                    // which planning dropped already.
                    self.graphs.remove(&graph);
                }
                Msg::Group(group) => {
                    self.stats
                        .queued()
                        .fetch_sub(group.changes.len() as u64, Ordering::AcqRel);
                    if !plans.contains_key(&group.graph) {
                        order.push(group.graph.clone());
                    }
                    let plan = plans.entry(group.graph.clone()).or_default();
                    self.accept(group, plan);
                }
                Msg::Refused {
                    graph,
                    from_seq,
                    error,
                } => {
                    if !plans.contains_key(&graph) {
                        order.push(graph.clone());
                    }
                    let plan = plans.entry(graph.clone()).or_default();
                    let poisoned = plan
                        .failure
                        .as_ref()
                        .map(|f| f.0)
                        .or(self.graphs.get(&graph).and_then(|s| s.failed_from));
                    if poisoned.is_none_or(|p| from_seq <= p) && plan.failure.is_none() {
                        plan.failure = Some((from_seq, error));
                    }
                }
                Msg::Shutdown => shutdown = true,
            }
        }
        if order.is_empty() {
            return Round { shutdown, loads };
        }
        let started = Instant::now();
        let mut pack = PackWriter::new();
        let mut built: Vec<(String, Built, u64)> = Vec::new();
        // Graphs whose accepted changes failed this round: their refusals
        // are covered by that failure.
        let mut failed: Vec<String> = Vec::new();
        for name in &order {
            let (Some(plan), Some(state)) = (plans.get(name), self.graphs.get(name)) else {
                continue;
            };
            let Some(first) = plan
                .chunks
                .first()
                .and_then(|c| c.changes.first())
                .map(|c| c.seq)
            else {
                continue;
            };
            let mark = pack.mark();
            match commit::build(state, &plan.chunks, &mut pack) {
                Ok(b) => built.push((name.clone(), b, first)),
                Err(e) => {
                    pack.truncate(mark);
                    self.fail(name, first, CommitError::Storage(e));
                    failed.push(name.clone());
                }
            }
        }
        if !built.is_empty() && !pack.is_empty() {
            let objects = pack.len();
            match pack.finish(&self.pack_dir, self.config.fsync) {
                Ok(written) => {
                    tracing::debug!(pack = %written.pack.display(), index = %written.index.display(), objects, bytes = written.bytes, "pack written");
                    self.stats.wrote(written.bytes);
                    if written.bytes < repack::MAX_MERGE_BYTES {
                        self.merger.pack_written();
                    }
                }
                Err(e) => {
                    let error = CommitError::Storage(format!(
                        "writing the pack in {}: {e}",
                        self.pack_dir.display()
                    ));
                    for (name, _, first) in built.drain(..) {
                        self.fail(&name, first, error.clone());
                        failed.push(name);
                    }
                }
            }
        }
        // The changes are written: let go of them before the hub hears of
        // their commits, so that the graph's owner, then their only holder,
        // fills the commit in without copying them (`Owner::committed`).
        for plan in plans.values_mut() {
            plan.chunks = Vec::new();
        }
        for (name, b, first) in built {
            let Some(&(_, tip)) = b.commits.last() else {
                continue;
            };
            if let Err(e) = self.move_ref(&name, tip) {
                self.fail(&name, first, CommitError::Storage(e));
                failed.push(name);
                continue;
            }
            let Some(state) = self.graphs.get_mut(&name) else {
                continue;
            };
            state.tip = Some(tip);
            state.tree = b.tree;
            state.epoch = b.epoch;
            if let Some(&(upto, _)) = b.commits.last() {
                state.seq = upto;
            }
            self.stats.committed(b.commits.len() as u64, b.changes);
            for (upto, id) in b.commits {
                tracing::debug!(graph = %name, upto, commit = %id, "committed");
                let _ = self.events.send(PersistEvent::Committed {
                    graph: name.clone(),
                    upto,
                    commit: id.to_string(),
                });
            }
        }
        for name in order {
            let Some(plan) = plans.remove(&name) else {
                continue;
            };
            let Some((from_seq, error)) = plan.failure else {
                continue;
            };
            if failed.contains(&name) {
                continue;
            }
            tracing::warn!(graph = %name, from_seq, %error, "group refused");
            self.stats.refused();
            if let Some(state) = self.graphs.get_mut(&name) {
                state.failed_from = Some(from_seq);
            }
            let _ = self.events.send(PersistEvent::Failed {
                graph: name,
                from_seq,
                error,
            });
        }
        self.stats
            .round(u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX));
        Round { shutdown, loads }
    }

    /// Takes a group into a graph's plan, or refuses or drops it.
    fn accept(&mut self, group: Group, plan: &mut Plan) {
        let Some(first) = group.changes.first().map(|c| c.seq) else {
            return;
        };
        if !is_valid_graph_name(&group.graph) {
            plan.failure.get_or_insert((
                first,
                CommitError::Refused(format!("`{}` cannot be stored as a git ref", group.graph)),
            ));
            return;
        }
        let state = self
            .graphs
            .entry(group.graph.clone())
            .or_insert_with(|| GraphState::new(&group.graph, &group.epoch));
        let expected = state.seq + 1 + plan.count;
        let poisoned = plan.failure.as_ref().map(|f| f.0).or(state.failed_from);
        if plan.failure.is_none() && first == expected {
            let consecutive = group
                .changes
                .iter()
                .enumerate()
                .all(|(i, c)| c.seq == first + i as u64);
            if !consecutive {
                plan.failure = Some((
                    first,
                    CommitError::Refused("the group's changes are not consecutive".into()),
                ));
                return;
            }
            if !is_valid_epoch(&group.epoch) {
                plan.failure = Some((
                    first,
                    CommitError::Refused("the epoch cannot be stored in a trailer".into()),
                ));
                return;
            }
            state.failed_from = None;
            plan.count += group.changes.len() as u64;
            let max = self.config.max_group_changes.max(1);
            for change in group.changes {
                match plan.chunks.last_mut() {
                    Some(c) if c.epoch == group.epoch && c.changes.len() < max => {
                        c.changes.push(change)
                    }
                    _ => plan.chunks.push(Chunk {
                        epoch: group.epoch.clone(),
                        changes: vec![change],
                    }),
                }
            }
        } else if poisoned.is_some_and(|p| first > p) {
            // Ordered before the owner rolled back from `p`: covered.
            tracing::debug!(graph = %group.graph, first, "dropping a group after a failure");
        } else if plan.failure.is_none() {
            plan.failure = Some((
                first,
                CommitError::Refused(format!(
                    "out of order: expected seq {expected}, got {first}"
                )),
            ));
        }
    }

    /// Reads `graph` back from its ref's tip, with its replay window, and
    /// keeps its committed tree for the commits that follow.
    fn load(&mut self, graph: &str) -> Result<Option<Restored>, LoadError> {
        let refname = format!("{}{graph}", commit::REF_PREFIX);
        if !is_valid_graph_name(graph) {
            return Ok(None);
        }
        let tip = refs::read_ref(&self.repo_path, &refname).map_err(|source| LoadError::Io {
            context: format!("reading {refname}"),
            source,
        })?;
        let Some(tip) = tip else {
            self.graphs.remove(graph);
            return Ok(None);
        };
        let repo = Repository::open_bare(&self.repo_path)?;
        let (restored, state) = load::load_graph(&repo, graph, tip.to_oid(), &self.config)?;
        self.graphs.insert(graph.to_owned(), state);
        Ok(Some(restored))
    }

    /// Reports a failed commit and poisons the graph from `from_seq`.
    fn fail(&mut self, graph: &str, from_seq: u64, error: CommitError) {
        tracing::error!(graph, from_seq, %error, "commit failed");
        self.stats.failed();
        if let Some(state) = self.graphs.get_mut(graph) {
            state.failed_from = Some(from_seq);
        }
        let _ = self.events.send(PersistEvent::Failed {
            graph: graph.to_owned(),
            from_seq,
            error,
        });
    }

    /// Moves the graph's ref from its tip to `to` (compare-and-swap) and
    /// makes it durable (see `refs`).
    fn move_ref(&mut self, graph: &str, to: ObjectId) -> Result<(), String> {
        let Some(state) = self.graphs.get(graph) else {
            return Err("unknown graph".into());
        };
        refs::update_ref(
            &self.repo_path,
            &state.refname,
            Some(to),
            state.tip,
            self.config.fsync,
        )
    }
}

/// The repository path for a data directory.
pub fn repo_path(data_dir: &Path) -> PathBuf {
    data_dir.join(REPO_DIR)
}

/// Reads one graph as committed at its ref's tip, read only and without its
/// replay window: `None` when the repository has no such graph. For tools
/// that check the server against git (the soak test).
///
/// # Errors
/// There is no repository, or the graph cannot be read or is damaged.
pub fn read_graph(data_dir: &Path, graph: &str) -> Result<Option<Restored>, OpenError> {
    let (repo, config) = open_for_reading(data_dir)?;
    let Some((_, tip)) = load::graph_refs(&repo)?
        .into_iter()
        .find(|(name, _)| name == graph)
    else {
        return Ok(None);
    };
    Ok(Some(load::load_graph(&repo, graph, tip, &config)?.0))
}

/// Opens the repository of `data_dir` to read every graph whole: the
/// settings load without a replay window.
fn open_for_reading(data_dir: &Path) -> Result<(Repository, PersistConfig), OpenError> {
    let path = repo_path(data_dir);
    let repo = Repository::open_bare(&path).map_err(|source| OpenError::Open { path, source })?;
    let config = PersistConfig {
        replay_changes: 0,
        replay_ms: 0,
        ..PersistConfig::new(data_dir)
    };
    Ok((repo, config))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
