//! The graphs the hub holds (docs/architecture.md, "The hub"): those open
//! (an owner and a roster each), those on their way from git, those in git
//! but not open, and which open ones may be released.
//!
//! A graph is *idle* when no session is on it and every change it ordered
//! has been answered by persistence (committed or failed): releasing it
//! then loses nothing, since git holds all of it. Idle graphs are kept in
//! the order they became idle, so the ones whose time is up
//! ([`Graphs::take_expired`]) and the oldest, which gives way when the cap
//! is reached ([`Graphs::take_oldest_idle`]), are found without looking at
//! the others. Whatever a graph being loaded is asked meanwhile waits here,
//! in order, for the hub to serve once it is open ([`Graphs::loaded`]).
//!
//! Pure bookkeeping: no I/O, no clock (the hub passes the time), no
//! channels. The hub decides what to do with what comes out.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gitmind_owner::Owner;

use crate::presence::Roster;
use crate::subscriptions::Subscriptions;

/// An open graph: its owner and the sessions on it.
pub struct Graph {
    /// The graph's owner.
    pub owner: Owner,
    /// The sessions on it and their presence.
    pub roster: Roster,
    /// Its sessions' regions and live queries.
    pub subs: Subscriptions,
    /// Its link suggestions, made when first asked for.
    pub gonzai: Option<crate::gonzai::Gonzai>,
    /// Held open whatever its sessions: in a cluster, a graph whose lease
    /// this server holds serves the sessions of other servers too.
    pub pinned: bool,
    /// Its key in the idle order, while it is idle.
    idle: Option<u64>,
}

impl Graph {
    /// A graph with no session yet, on a server of `shards` shards.
    pub fn new(owner: Owner, shards: usize) -> Self {
        Graph {
            owner,
            roster: Roster::new(shards),
            subs: Subscriptions::default(),
            gonzai: None,
            pinned: false,
            idle: None,
        }
    }

    /// Whether it could be released without loss: no session on it, and
    /// nothing ordered that persistence has not answered.
    pub fn is_idle(&self) -> bool {
        !self.pinned
            && self.roster.shards().next().is_none()
            && self.owner.ordered_seq() == self.owner.committed_seq()
    }
}

/// Where a graph is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// Open: its owner is in memory.
    Open,
    /// Being read from git; what it is asked waits.
    Loading,
    /// In git, not open.
    Stored,
    /// Nowhere: a new graph.
    Unknown,
}

/// The graphs the hub holds; `W` is what waits for a graph being loaded.
pub struct Graphs<W> {
    open: HashMap<Arc<str>, Graph>,
    /// Graphs being read from git, each with what waits for it, in order.
    loading: HashMap<Arc<str>, Vec<W>>,
    /// Graphs in git (every ref at start, and each graph released with a
    /// commit). An open graph may be listed too: `open` is looked at first.
    stored: HashSet<Arc<str>>,
    /// The idle graphs by the order they became idle: name and since when.
    idle: BTreeMap<u64, (Arc<str>, Instant)>,
    next_idle: u64,
    /// The most graphs open and loading together.
    max_open: usize,
    /// How long a graph stays idle before it is released.
    idle_after: Duration,
}

impl<W> Graphs<W> {
    /// None open; `stored` are the graphs in git.
    pub fn new(
        stored: impl IntoIterator<Item = String>,
        max_open: usize,
        idle_after: Duration,
    ) -> Self {
        Graphs {
            open: HashMap::new(),
            loading: HashMap::new(),
            stored: stored
                .into_iter()
                .map(|name| Arc::from(name.as_str()))
                .collect(),
            idle: BTreeMap::new(),
            next_idle: 0,
            max_open,
            idle_after,
        }
    }

    /// An open graph.
    pub fn get(&self, name: &str) -> Option<&Graph> {
        self.open.get(name)
    }

    /// An open graph, to change.
    pub fn get_mut(&mut self, name: &str) -> Option<&mut Graph> {
        self.open.get_mut(name)
    }

    /// Where a graph is.
    pub fn place(&self, name: &str) -> Place {
        if self.open.contains_key(name) {
            Place::Open
        } else if self.loading.contains_key(name) {
            Place::Loading
        } else if self.stored.contains(name) {
            Place::Stored
        } else {
            Place::Unknown
        }
    }

    /// Whether the graph is being read from git.
    pub fn is_loading(&self, name: &str) -> bool {
        self.loading.contains_key(name)
    }

    /// Graphs open and being loaded: what the cap bounds.
    pub fn held(&self) -> usize {
        self.open.len() + self.loading.len()
    }

    /// Whether one more graph would pass the cap.
    pub fn is_full(&self) -> bool {
        self.held() >= self.max_open
    }

    /// Opens a graph (new, or just loaded); it is not idle until
    /// [`Graphs::settle`] says so.
    pub fn insert(&mut self, name: Arc<str>, graph: Graph) {
        if let Some(old) = self.open.insert(name, graph) {
            // Not done by the hub (it opens only what is not open); keep
            // the idle order true if it ever is.
            if let Some(key) = old.idle {
                self.idle.remove(&key);
            }
        }
    }

    /// Notes that `name` is being read from git, with `first` waiting for it.
    pub fn start_loading(&mut self, name: Arc<str>, first: W) {
        self.loading.insert(name, vec![first]);
    }

    /// Queues `item` behind the load of `name`; gives it back when the
    /// graph is not being loaded.
    ///
    /// # Errors
    /// `item` itself, when `name` is not being loaded.
    pub fn wait(&mut self, name: &str, item: W) -> Result<(), W> {
        match self.loading.get_mut(name) {
            Some(waiting) => {
                waiting.push(item);
                Ok(())
            }
            None => Err(item),
        }
    }

    /// How many items wait for the load of `name`.
    pub fn waiting(&self, name: &str) -> usize {
        self.loading.get(name).map_or(0, Vec::len)
    }

    /// The load of `name` is over: what waited for it, in order (`None`
    /// when it was not being loaded). The caller opens the graph
    /// ([`Graphs::insert`]) or gives up on it.
    pub fn loaded(&mut self, name: &str) -> Option<(Arc<str>, Vec<W>)> {
        self.loading.remove_entry(name)
    }

    /// Puts an open graph into the idle order, or takes it out, after
    /// something that may have changed whether it is idle (a session
    /// joined or left, persistence answered, it was loaded).
    pub fn settle(&mut self, name: &str, now: Instant) {
        let Some((key, graph)) = self.open.get_key_value(name) else {
            return;
        };
        match (graph.is_idle(), graph.idle) {
            (true, None) => {
                let key = key.clone();
                self.mark_idle(key, now);
            }
            (false, Some(at)) => {
                self.idle.remove(&at);
                if let Some(graph) = self.open.get_mut(name) {
                    graph.idle = None;
                }
            }
            _ => {}
        }
    }

    /// Starts an idle graph's idle time again (it was read).
    pub fn touch(&mut self, name: &str, now: Instant) {
        let Some((key, graph)) = self.open.get_key_value(name) else {
            return;
        };
        let Some(at) = graph.idle else {
            return;
        };
        let key = key.clone();
        self.idle.remove(&at);
        self.mark_idle(key, now);
    }

    fn mark_idle(&mut self, name: Arc<str>, now: Instant) {
        let at = self.next_idle;
        self.next_idle += 1;
        if let Some(graph) = self.open.get_mut(&name) {
            graph.idle = Some(at);
            self.idle.insert(at, (name, now));
        }
    }

    /// When the graph idle the longest is due to be released.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.idle
            .first_key_value()
            .map(|(_, (_, since))| *since + self.idle_after)
    }

    /// Releases one graph whose idle time is up at `now`, if any: call
    /// until `None`.
    pub fn take_expired(&mut self, now: Instant) -> Option<(Arc<str>, Graph)> {
        loop {
            let (_, (_, since)) = self.idle.first_key_value()?;
            if now < *since + self.idle_after {
                return None;
            }
            if let Some(released) = self.release_oldest_idle() {
                return Some(released);
            }
        }
    }

    /// Releases the graph idle the longest, whatever its time: to make
    /// room under the cap. `None` when no graph is idle.
    pub fn take_oldest_idle(&mut self) -> Option<(Arc<str>, Graph)> {
        while !self.idle.is_empty() {
            if let Some(released) = self.release_oldest_idle() {
                return Some(released);
            }
        }
        None
    }

    /// Takes the first graph of the idle order out and releases it, if it
    /// is still idle (`None` otherwise: it only leaves the order).
    fn release_oldest_idle(&mut self) -> Option<(Arc<str>, Graph)> {
        let (_, (name, _)) = self.idle.pop_first()?;
        let graph = self.open.get_mut(&name)?;
        graph.idle = None;
        if !graph.is_idle() {
            // Whatever made it busy should have settled it; never release
            // a graph with a session or a change on its way to git.
            return None;
        }
        let (name, graph) = self.open.remove_entry(&name)?;
        if graph.owner.committed_seq() > 0 {
            self.stored.insert(name.clone());
        } else {
            // Nothing of it reached git: it is a new graph again.
            self.stored.remove(&name);
        }
        Some((name, graph))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use gitmind_owner::OwnerConfig;

    use crate::fanout::Member;

    fn graphs(stored: &[&str], max_open: usize) -> Graphs<u32> {
        Graphs::new(
            stored.iter().map(|s| (*s).to_owned()),
            max_open,
            Duration::from_millis(100),
        )
    }

    fn open(g: &mut Graphs<u32>, name: &str, now: Instant) {
        let owner = Owner::new(name, "e".into(), OwnerConfig::default());
        g.insert(name.into(), Graph::new(owner, 1));
        g.settle(name, now);
    }

    fn member(graph: &str, session: u64) -> Member {
        Member {
            session,
            shard: 0,
            codec: gitmind_schema::Codec::Json,
            graph: graph.into(),
            user_id: "u".into(),
            session_id: format!("s-{session}"),
            view: None,
        }
    }

    #[test]
    fn places_follow_loading_and_opening() {
        let mut g = graphs(&["kept"], 10);
        assert_eq!(g.place("kept"), Place::Stored);
        assert_eq!(g.place("new"), Place::Unknown);
        g.start_loading("kept".into(), 1);
        assert_eq!(g.place("kept"), Place::Loading);
        assert_eq!(g.wait("kept", 2), Ok(()));
        assert_eq!(g.wait("new", 3), Err(3));
        assert_eq!(g.held(), 1);
        let (name, waiting) = g.loaded("kept").unwrap();
        assert_eq!((&*name, waiting), ("kept", vec![1, 2]));
        assert!(g.loaded("kept").is_none());
        open(&mut g, "kept", Instant::now());
        assert_eq!(g.place("kept"), Place::Open);
    }

    #[test]
    fn an_idle_graph_expires_after_its_time_and_a_busy_one_never() {
        let t0 = Instant::now();
        let mut g = graphs(&[], 10);
        open(&mut g, "quiet", t0);
        open(&mut g, "busy", t0);
        g.get_mut("busy").unwrap().roster.join(member("busy", 1));
        g.settle("busy", t0);
        assert_eq!(g.next_expiry(), Some(t0 + Duration::from_millis(100)));
        assert!(g.take_expired(t0 + Duration::from_millis(99)).is_none());
        let (name, _) = g.take_expired(t0 + Duration::from_millis(100)).unwrap();
        assert_eq!(&*name, "quiet");
        assert!(g.take_expired(t0 + Duration::from_secs(100)).is_none());
        assert_eq!(g.place("busy"), Place::Open);
        // Nothing reached git: a new graph again.
        assert_eq!(g.place("quiet"), Place::Unknown);
        // Its last session leaves: idle from then.
        let t1 = t0 + Duration::from_secs(1);
        g.get_mut("busy").unwrap().roster.leave(1);
        g.settle("busy", t1);
        assert_eq!(g.next_expiry(), Some(t1 + Duration::from_millis(100)));
    }

    #[test]
    fn a_read_restarts_the_idle_time_and_a_join_stops_it() {
        let t0 = Instant::now();
        let mut g = graphs(&[], 10);
        open(&mut g, "a", t0);
        let t1 = t0 + Duration::from_millis(50);
        g.touch("a", t1);
        assert_eq!(g.next_expiry(), Some(t1 + Duration::from_millis(100)));
        g.get_mut("a").unwrap().roster.join(member("a", 1));
        g.settle("a", t1);
        assert_eq!(g.next_expiry(), None);
        g.touch("a", t1);
        assert_eq!(
            g.next_expiry(),
            None,
            "a busy graph is not made idle by a read"
        );
    }

    #[test]
    fn under_the_cap_the_oldest_idle_graph_gives_way() {
        let t0 = Instant::now();
        let mut g = graphs(&[], 3);
        open(&mut g, "old", t0);
        open(&mut g, "young", t0 + Duration::from_millis(1));
        open(&mut g, "held", t0);
        g.get_mut("held").unwrap().roster.join(member("held", 1));
        g.settle("held", t0);
        assert!(g.is_full());
        assert_eq!(&*g.take_oldest_idle().unwrap().0, "old");
        assert_eq!(&*g.take_oldest_idle().unwrap().0, "young");
        assert!(
            g.take_oldest_idle().is_none(),
            "a graph with a session stays"
        );
        assert_eq!(g.held(), 1);
    }

    #[test]
    fn a_change_on_its_way_to_git_keeps_its_graph_until_answered() {
        let t0 = Instant::now();
        let mut g = graphs(&[], 10);
        open(&mut g, "a", t0);
        let origin = gitmind_owner::Origin {
            session: 1,
            session_id: "s-1".into(),
            user_id: "u".into(),
        };
        let body = gitmind_schema::Body::NodeCreate(gitmind_schema::message::NodeCreate {
            base_seq: Some(0),
            node: gitmind_schema::model::Node {
                id: "concept:a".into(),
                ..Default::default()
            },
            commit: None,
        });
        let owner = &mut g.get_mut("a").unwrap().owner;
        assert!(matches!(
            owner.submit(origin, "m1", body, 1),
            gitmind_owner::Submit::Ordered(1)
        ));
        assert!(owner.take_group().is_some());
        g.settle("a", t0);
        let later = t0 + Duration::from_secs(10);
        assert!(g.take_expired(later).is_none(), "committing");
        assert!(g.take_oldest_idle().is_none(), "committing");
        g.get_mut("a").unwrap().owner.committed(1, "c0ffee");
        g.settle("a", later);
        let (_, released) = g.take_expired(later + Duration::from_millis(100)).unwrap();
        assert_eq!(released.owner.committed_seq(), 1);
        assert_eq!(g.place("a"), Place::Stored, "it is in git now");
    }

    #[test]
    fn a_graph_made_busy_without_settling_is_still_never_released() {
        let t0 = Instant::now();
        let mut g = graphs(&[], 10);
        open(&mut g, "a", t0);
        g.get_mut("a").unwrap().roster.join(member("a", 1));
        assert!(g.take_oldest_idle().is_none());
        assert!(g.take_expired(t0 + Duration::from_secs(1)).is_none());
        assert_eq!(g.place("a"), Place::Open);
        assert_eq!(g.next_expiry(), None);
    }
}
