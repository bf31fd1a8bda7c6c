//! A randomized, deterministic simulation of several clients editing one
//! graph at once through the graph owner: each client is a `Replica`,
//! messages are delayed and reordered between clients (each client's own
//! streams stay in order, as a connection keeps them), the persistence
//! thread commits groups at random points (and, in one test, fails), and
//! clients reconnect and resume. At the end, with everything delivered and
//! settled, every replica must equal the owner's committed graph, every
//! confirmed change must be in the server's history, and no confirmed text
//! edit may be lost.
//!
//! Knobs (environment): `SIM_SEEDS=N` runs N more seeds per test (a wider
//! sweep: `SIM_SEEDS=80 cargo test --release -p gitmind-server --test
//! simulation`), `SIM_ONLY=seed` runs one seed, `SIM_TRACE=text` prints every
//! message and local change whose debug form contains `text` (a node id, a
//! mutation id) with the seed it belongs to.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use gitmind_client::replica::Replica;
use gitmind_owner::change::ChangeRecord;
use gitmind_owner::{Origin, Owner, OwnerConfig, Submit, SyncData};
use gitmind_schema::message::{
    BatchOp, BatchUpdate, EdgeCreate, EdgeDelete, EdgeUpdate, GraphSync, NodeCreate, NodeDelete,
    NodeUpdate, SyncMode,
};
use gitmind_schema::model::{Edge, EdgeSet, Node, NodeSet, PropValue, PropsPatch, TextEdits};
use gitmind_schema::ot::TextOp;
use gitmind_schema::{Body, Envelope};
use gitmind_testkit::Rng;

const COMMIT: &str = "c0ffee0000000000000000000000000000000000";

/// What a client meant by one mutation, to check against the end state.
#[derive(Debug, Default, Clone)]
struct Intent {
    /// Markers inserted by text edits: (node, marker).
    inserted: Vec<(String, String)>,
    /// Markers it deleted: (node, marker).
    deleted: Vec<(String, String)>,
    /// Nodes whose whole text it replaced (set.content, create with content, delete).
    replaced: Vec<String>,
    /// Markers brought by a replacement: (node, marker).
    replacing: Vec<(String, String)>,
    /// Labels set: (node, label).
    labels: Vec<(String, String)>,
    /// Nodes deleted.
    deleted_nodes: Vec<String>,
}

struct Client {
    index: usize,
    user: String,
    session: u64,
    session_id: String,
    replica: Replica,
    to_server: VecDeque<Envelope>,
    from_server: VecDeque<Envelope>,
    counter: u64,
    intents: HashMap<String, Intent>,
}

struct Sim {
    rng: Rng,
    owner: Owner,
    clients: Vec<Client>,
    /// Groups handed to "persistence", not yet committed: their last seq.
    inflight: VecDeque<u64>,
    now: u64,
    next_session: u64,
    fail_percent: u64,
    reconnect_percent: u64,
    failures: usize,
    reconnects: usize,
}

fn to_graph_sync(sync: SyncData) -> GraphSync {
    match sync {
        SyncData::Snapshot {
            epoch,
            seq,
            nodes,
            edges,
        } => GraphSync {
            mode: Some(SyncMode::Snapshot),
            epoch: Some(epoch),
            seq: Some(seq),
            nodes: Some(nodes.iter().map(|n| (**n).clone()).collect()),
            edges: Some(edges.iter().map(|e| (**e).clone()).collect()),
            ..GraphSync::default()
        },
        SyncData::Delta { epoch, seq, events } => GraphSync {
            mode: Some(SyncMode::Delta),
            epoch: Some(epoch),
            seq: Some(seq),
            events: Some(events),
            ..GraphSync::default()
        },
    }
}

/// The markers of a text: `[...]` units.
fn markers(text: &str) -> Vec<String> {
    text.split_inclusive(']').map(str::to_owned).collect()
}

/// Char offsets of the boundaries between markers.
fn boundaries(text: &str) -> Vec<u64> {
    let mut out = vec![0];
    let mut pos = 0;
    for c in text.chars() {
        pos += 1;
        if c == ']' {
            out.push(pos);
        }
    }
    out
}

impl Sim {
    fn new(seed: u64, clients: usize, config: OwnerConfig) -> Sim {
        let mut sim = Sim {
            rng: Rng::new(seed),
            owner: Owner::new("sim", "epoch-1".into(), config),
            clients: Vec::new(),
            inflight: VecDeque::new(),
            now: 1_000,
            next_session: 1,
            fail_percent: 0,
            reconnect_percent: 0,
            failures: 0,
            reconnects: 0,
        };
        for i in 0..clients {
            let mut replica = Replica::new();
            let user = format!("user{i}");
            replica.set_user(&user);
            replica
                .apply_sync(&to_graph_sync(sim.owner.sync(None)))
                .unwrap();
            let session = sim.next_session;
            sim.next_session += 1;
            sim.clients.push(Client {
                index: i,
                user,
                session,
                session_id: format!("s{session}"),
                replica,
                to_server: VecDeque::new(),
                from_server: VecDeque::new(),
                counter: 0,
                intents: HashMap::new(),
            });
        }
        sim
    }

    fn step(&mut self) {
        self.now += 1;
        let c = self.rng.below(self.clients.len());
        match self.rng.below(100) {
            0..=29 => self.make_change(c),
            30..=54 => self.deliver_to_server(c),
            55..=84 => self.deliver_to_client(c),
            85..=91 => self.take_group(),
            92..=98 => self.commit_one(),
            _ => {
                if self.rng.percent(self.reconnect_percent * 10) {
                    self.reconnect(c);
                }
            }
        }
    }

    fn take_group(&mut self) {
        if let Some(g) = self.owner.take_group() {
            let last = g.changes.last().map(|c| c.seq).unwrap();
            self.inflight.push_back(last);
        }
    }

    fn commit_one(&mut self) {
        let Some(last) = self.inflight.pop_front() else {
            return;
        };
        if self.rng.percent(self.fail_percent) {
            self.failures += 1;
            self.inflight.clear();
            for (session, env) in self.owner.commit_failed() {
                self.send_to_session(session, env);
            }
            return;
        }
        // Persistence may merge this group with the next into one commit.
        let upto = if self.rng.percent(30) {
            self.inflight.pop_front().unwrap_or(last)
        } else {
            last
        };
        for release in self.owner.committed(upto, COMMIT) {
            for client in &mut self.clients {
                if release.recipients.contains(&client.session) {
                    client.from_server.push_back(release.outcome().clone());
                } else {
                    client.from_server.push_back(release.event().clone());
                }
            }
        }
    }

    fn send_to_session(&mut self, session: u64, env: Envelope) {
        if let Some(c) = self.clients.iter_mut().find(|c| c.session == session) {
            c.from_server.push_back(env);
        }
    }

    fn deliver_to_server(&mut self, c: usize) {
        let Some(env) = self.clients[c].to_server.pop_front() else {
            return;
        };
        let client = &self.clients[c];
        let origin = Origin {
            session: client.session,
            session_id: client.session_id.clone(),
            user_id: client.user.clone(),
        };
        match self.owner.submit(origin, &env.id, env.body, self.now) {
            Submit::Reply(reply) => self.clients[c].from_server.push_back(reply),
            Submit::Ordered(_) => {}
        }
    }

    fn deliver_to_client(&mut self, c: usize) {
        let client = &mut self.clients[c];
        let Some(env) = client.from_server.pop_front() else {
            return;
        };
        if let Some(watch) = std::env::var_os("SIM_TRACE") {
            let text = format!("{env:?}");
            if text.contains(watch.to_str().unwrap()) {
                eprintln!("c{c} <- {text}");
            }
        }
        match env.body {
            Body::UpdateConfirmed(_)
            | Body::UpdateConflictResolved(_)
            | Body::UpdateRollback(_) => {
                let send = client
                    .replica
                    .settle(&env)
                    .unwrap_or_else(|e| panic!("client {c}: settle {env:?}: {e}"));
                client.to_server.extend(send);
            }
            _ => {
                let send = client
                    .replica
                    .apply_event(&env)
                    .unwrap_or_else(|e| panic!("client {c}: event {env:?}: {e}"));
                client.to_server.extend(send);
            }
        }
    }

    /// The connection drops: whatever was on the wire is lost; the client
    /// reconnects as a new session, resumes with `since` and resends.
    fn reconnect(&mut self, c: usize) {
        self.reconnects += 1;
        if std::env::var_os("SIM_TRACE").is_some() {
            eprintln!(
                "c{c} reconnects at seq {}; pending sent {:?}",
                self.clients[c].replica.server_seq(),
                self.clients[c]
                    .replica
                    .pending()
                    .iter()
                    .map(|e| e.id.clone())
                    .collect::<Vec<_>>()
            );
        }
        let session = self.next_session;
        self.next_session += 1;
        let client = &mut self.clients[c];
        client.to_server.clear();
        client.from_server.clear();
        client.session = session;
        client.session_id = format!("s{session}");
        let since = client.replica.server_seq();
        let epoch = client.replica.epoch().unwrap().to_owned();
        let sync = to_graph_sync(self.owner.sync(Some((since, &epoch))));
        let ready = client.replica.apply_sync(&sync).unwrap();
        let resend = client.replica.pending();
        client.to_server.extend(
            resend
                .into_iter()
                .filter(|e| ready.iter().all(|r| r.id != e.id)),
        );
        client.to_server.extend(ready);
    }

    fn make_change(&mut self, c: usize) {
        let Some((body, intent)) = self.random_mutation(c) else {
            return;
        };
        let client = &mut self.clients[c];
        client.counter += 1;
        let id = format!("c{}-m{}", client.index, client.counter);
        client.intents.insert(id.clone(), intent);
        if let Some(watch) = std::env::var_os("SIM_TRACE") {
            let text = format!("{body:?}");
            let w = watch.to_str().unwrap();
            if text.contains(w) {
                let view = client.replica.node(w).and_then(|n| n.content.clone());
                let server = client
                    .replica
                    .server_nodes()
                    .find(|n| n.id == w)
                    .and_then(|n| n.content.clone());
                eprintln!(
                    "c{c} makes {id} (view {view:?}, server {server:?}, seq {}): {text}",
                    client.replica.server_seq()
                );
            }
        }
        if let Some(env) = client.replica.local_mutation(&id, body).unwrap() {
            client.to_server.push_back(env);
        }
    }

    /// A random mutation, made against what the client sees.
    fn random_mutation(&mut self, c: usize) -> Option<(Body, Intent)> {
        let batch = self.rng.percent(15);
        let count = if batch { 2 + self.rng.below(3) } else { 1 };
        let mut ops = Vec::new();
        let mut intent = Intent::default();
        let mut touched_text = BTreeSet::new();
        for _ in 0..count {
            if let Some(op) = self.random_op(c, &mut intent, &mut touched_text, batch) {
                ops.push(op);
            }
        }
        if ops.is_empty() {
            return None;
        }
        let body = if batch {
            Body::BatchUpdate(BatchUpdate {
                base_seq: None,
                ops,
                commit: None,
            })
        } else {
            Body::from(ops.pop()?)
        };
        Some((body, intent))
    }

    fn random_op(
        &mut self,
        c: usize,
        intent: &mut Intent,
        touched_text: &mut BTreeSet<String>,
        in_batch: bool,
    ) -> Option<BatchOp> {
        let client = &self.clients[c];
        let mut nodes: Vec<&Node> = client.replica.nodes().collect();
        nodes.sort_by(|a, b| a.id.cmp(&b.id));
        let mut edges: Vec<&Edge> = client.replica.edges().collect();
        edges.sort_by(|a, b| a.id.cmp(&b.id));
        let tag = format!("c{}.{}", client.index, client.counter + 1);
        let roll = self.rng.below(100);
        if nodes.len() < 3 || roll < 12 {
            // Shared ids now and then, so creates race.
            let id = if self.rng.percent(30) {
                format!("n:shared-{}", self.rng.below(4))
            } else {
                format!("n:{tag}-{}", self.rng.below(1000))
            };
            let content = self.rng.percent(30).then(|| format!("[{tag}.init]"));
            if let Some(text) = &content {
                intent.replaced.push(id.clone());
                intent.replacing.push((id.clone(), text.clone()));
            }
            if in_batch {
                touched_text.insert(id.clone());
            }
            let label = format!("label {tag}");
            intent.labels.push((id.clone(), label.clone()));
            return Some(BatchOp::NodeCreate(NodeCreate {
                base_seq: None,
                node: Node {
                    id,
                    label: Some(label),
                    content,
                    x: Some(self.rng.below(100) as f64),
                    ..Node::default()
                },
                commit: None,
            }));
        }
        let node = (*self.rng.pick(&nodes)?).clone();
        match roll {
            12..=29 => {
                let label = format!("label {tag}");
                intent.labels.push((node.id.clone(), label.clone()));
                Some(update(
                    &node.id,
                    NodeSet {
                        label: Some(label),
                        ..NodeSet::default()
                    },
                ))
            }
            30..=37 => {
                let mut p = PropsPatch::new();
                let key = format!("k{}", self.rng.below(3));
                let value = if self.rng.percent(20) {
                    None
                } else {
                    Some(PropValue::Number(self.rng.below(50) as f64))
                };
                p.insert(key, value);
                Some(update(
                    &node.id,
                    NodeSet {
                        props: Some(p),
                        y: Some(self.rng.below(9) as f64),
                        ..NodeSet::default()
                    },
                ))
            }
            38..=62 => {
                if !touched_text.insert(node.id.clone()) {
                    return None;
                }
                let text = node.content.clone().unwrap_or_default();
                let total = text.chars().count() as u64;
                let ms = markers(&text);
                let op = if ms.is_empty() || self.rng.percent(65) {
                    let at = *self.rng.pick(&boundaries(&text))?;
                    let marker = format!("[{tag}.{}]", self.rng.below(1000));
                    intent.inserted.push((node.id.clone(), marker.clone()));
                    let mut op = TextOp::new();
                    op.retain(at).insert(&marker).retain(total - at);
                    op
                } else {
                    let k = self.rng.below(ms.len());
                    let start: u64 = ms[..k].iter().map(|m| m.chars().count() as u64).sum();
                    let len = ms[k].chars().count() as u64;
                    intent.deleted.push((node.id.clone(), ms[k].clone()));
                    let mut op = TextOp::new();
                    op.retain(start).delete(len).retain(total - start - len);
                    op
                };
                Some(BatchOp::NodeUpdate(NodeUpdate {
                    base_seq: None,
                    id: node.id.clone(),
                    text: Some(TextEdits { content: Some(op) }),
                    ..NodeUpdate::default()
                }))
            }
            63..=66 => {
                if in_batch && !touched_text.insert(node.id.clone()) {
                    return None;
                }
                let text = format!("[{tag}.set]");
                intent.replaced.push(node.id.clone());
                intent.replacing.push((node.id.clone(), text.clone()));
                Some(update(
                    &node.id,
                    NodeSet {
                        content: Some(text),
                        ..NodeSet::default()
                    },
                ))
            }
            67..=70 => {
                if in_batch && !touched_text.insert(node.id.clone()) {
                    return None;
                }
                intent.replaced.push(node.id.clone());
                intent.deleted_nodes.push(node.id.clone());
                Some(BatchOp::NodeDelete(NodeDelete {
                    base_seq: None,
                    id: node.id.clone(),
                    ..NodeDelete::default()
                }))
            }
            71..=84 => {
                let other = (*self.rng.pick(&nodes)?).clone();
                let ty = *self.rng.pick(&["relates-to", "blocks", "semantic"])?;
                if ty == "blocks" && other.id == node.id {
                    return None;
                }
                Some(BatchOp::EdgeCreate(EdgeCreate {
                    base_seq: None,
                    edge: Edge {
                        source: node.id.clone(),
                        target: other.id.clone(),
                        edge_type: ty.into(),
                        confidence: Some(self.rng.below(11) as f64 / 10.0),
                        ..Edge::default()
                    },
                    commit: None,
                }))
            }
            85..=93 => {
                let e = (*self.rng.pick(&edges)?).clone();
                Some(BatchOp::EdgeUpdate(EdgeUpdate {
                    base_seq: None,
                    id: e.id.clone(),
                    set: Some(EdgeSet {
                        rationale: Some(format!("why {tag}")),
                        ..EdgeSet::default()
                    }),
                    ..EdgeUpdate::default()
                }))
            }
            _ => {
                let e = (*self.rng.pick(&edges)?).clone();
                Some(BatchOp::EdgeDelete(EdgeDelete {
                    base_seq: None,
                    id: e.id.clone(),
                    ..EdgeDelete::default()
                }))
            }
        }
    }

    /// Delivers everything and commits everything until nothing moves.
    fn drain(&mut self) {
        for _ in 0..10_000 {
            let mut moved = false;
            for c in 0..self.clients.len() {
                while !self.clients[c].to_server.is_empty() {
                    self.deliver_to_server(c);
                    moved = true;
                }
            }
            self.take_group();
            while !self.inflight.is_empty() {
                let saved = self.fail_percent;
                self.fail_percent = 0;
                self.commit_one();
                self.fail_percent = saved;
                moved = true;
            }
            for c in 0..self.clients.len() {
                while !self.clients[c].from_server.is_empty() {
                    self.deliver_to_client(c);
                    moved = true;
                }
            }
            if !moved {
                return;
            }
        }
        panic!("the simulation did not settle");
    }

    /// Every committed record, by (user, mutation id).
    fn history(&self) -> HashMap<(String, String), ChangeRecord> {
        let SyncData::Delta { events, .. } = self.owner.sync(Some((0, self.owner.epoch()))) else {
            panic!("the window should hold the whole run");
        };
        events
            .into_iter()
            .map(|e| {
                let key = (e.user_id.clone().unwrap(), e.id.clone());
                let rec = ChangeRecord {
                    seq: e.seq.unwrap(),
                    at_ms: e.timestamp.unwrap(),
                    user_id: key.0.clone(),
                    session_id: e.session_id.clone().unwrap(),
                    mutation_id: e.id.clone(),
                    outcome: e.clone(),
                    event: e,
                    writes: vec![],
                };
                (key, rec)
            })
            .collect()
    }

    fn check(&self) {
        let SyncData::Snapshot {
            nodes, edges, seq, ..
        } = self.owner.sync(None)
        else {
            panic!()
        };
        assert_eq!(seq, self.owner.ordered_seq(), "everything committed");
        let owner_nodes: BTreeMap<String, Node> = nodes
            .iter()
            .map(|n| (n.id.clone(), (**n).clone()))
            .collect();
        let owner_edges: BTreeMap<String, Edge> = edges
            .iter()
            .map(|e| (e.id.clone().unwrap(), (**e).clone()))
            .collect();
        for client in &self.clients {
            assert_eq!(
                client.replica.pending_count(),
                0,
                "client {} settled everything",
                client.index
            );
            assert_eq!(client.replica.server_seq(), seq);
            let view: BTreeMap<String, Node> = client
                .replica
                .nodes()
                .map(|n| (n.id.clone(), n.clone()))
                .collect();
            let view_edges: BTreeMap<String, Edge> = client
                .replica
                .edges()
                .map(|e| (e.id.clone().unwrap(), e.clone()))
                .collect();
            for (id, n) in &owner_nodes {
                assert_eq!(view.get(id), Some(n), "client {} node {id}", client.index);
            }
            assert_eq!(
                view.len(),
                owner_nodes.len(),
                "client {} node count",
                client.index
            );
            assert_eq!(view_edges, owner_edges, "client {} edges", client.index);
        }
        // Every confirmed change is in the server's history, and the text
        // kept every confirmed keystroke that nothing later removed.
        let history = self.history();
        let mut all_markers: BTreeSet<String> = BTreeSet::new();
        let mut replaced_at: HashMap<String, Vec<u64>> = HashMap::new();
        let mut deleted_markers: BTreeSet<(String, String)> = BTreeSet::new();
        let mut inserted: Vec<(String, String, u64)> = Vec::new();
        let mut deleted_nodes: BTreeSet<String> = BTreeSet::new();
        let mut labels: HashMap<String, (u64, String)> = HashMap::new();
        for client in &self.clients {
            for (id, intent) in &client.intents {
                let Some(rec) = history.get(&(client.user.clone(), id.clone())) else {
                    continue;
                };
                for (n, m) in &intent.inserted {
                    all_markers.insert(m.clone());
                    inserted.push((n.clone(), m.clone(), rec.seq));
                }
                for (_, m) in &intent.replacing {
                    all_markers.insert(m.clone());
                }
                for n in &intent.replaced {
                    replaced_at.entry(n.clone()).or_default().push(rec.seq);
                }
                deleted_markers.extend(intent.deleted.iter().cloned());
                deleted_nodes.extend(intent.deleted_nodes.iter().cloned());
                for (n, l) in &intent.labels {
                    let e = labels.entry(n.clone()).or_insert((0, String::new()));
                    if rec.seq >= e.0 {
                        *e = (rec.seq, l.clone());
                    }
                }
            }
        }
        let mut checked = 0;
        for (id, node) in &owner_nodes {
            let text = node.content.clone().unwrap_or_default();
            let present = markers(&text);
            let unique: BTreeSet<&String> = present.iter().collect();
            assert_eq!(
                unique.len(),
                present.len(),
                "node {id}: no marker twice: {text}"
            );
            for m in &present {
                assert!(
                    all_markers.contains(m),
                    "node {id}: marker {m} comes from a confirmed change"
                );
            }
            for (n, m, seq) in inserted.iter().filter(|(n, _, _)| n == id) {
                let covered = deleted_markers.contains(&(n.clone(), m.clone()))
                    || replaced_at
                        .get(n)
                        .is_some_and(|v| v.iter().any(|s| s > seq));
                if !covered {
                    checked += 1;
                    assert!(
                        present.contains(m),
                        "node {id}: confirmed insert {m} (seq {seq}) was lost: {text}"
                    );
                }
            }
            if !deleted_nodes.contains(id) {
                let want = labels.get(id).map(|(_, l)| l.as_str()).unwrap_or("");
                assert_eq!(
                    node.label.as_deref(),
                    Some(want),
                    "node {id}: last confirmed label wins"
                );
            }
        }
        assert!(
            checked > 0 || self.owner.ordered_seq() < 20,
            "the text check checked something"
        );
    }
}

fn update(id: &str, set: NodeSet) -> BatchOp {
    BatchOp::NodeUpdate(NodeUpdate {
        base_seq: None,
        id: id.into(),
        set: Some(set),
        ..NodeUpdate::default()
    })
}

fn run(seed: u64, clients: usize, steps: usize, fail_percent: u64, reconnect_percent: u64) -> Sim {
    if std::env::var_os("SIM_TRACE").is_some() {
        eprintln!("=== seed {seed}");
    }
    let only = std::env::var("SIM_ONLY")
        .ok()
        .and_then(|s| s.parse::<u64>().ok());
    if only.is_some_and(|o| o != seed) {
        return Sim::new(seed, clients, OwnerConfig::default());
    }
    let mut sim = Sim::new(seed, clients, OwnerConfig::default());
    sim.fail_percent = fail_percent;
    sim.reconnect_percent = reconnect_percent;
    for _ in 0..steps {
        sim.step();
    }
    sim.drain();
    sim.check();
    sim
}

// With SIM_ONLY, the other seeds return an idle simulation: skip the
// "enough happened" assertions for them.
fn idle(sim: &Sim) -> bool {
    sim.owner.ordered_seq() == 0
}

/// More seeds than the default run: `SIM_SEEDS=200 cargo test ...`.
fn extra_seeds() -> u64 {
    std::env::var("SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[test]
fn concurrent_clients_converge_to_the_committed_graph() {
    for seed in 1..=10 + extra_seeds() {
        let sim = run(seed, 3 + (seed as usize % 3), 3_000, 0, 0);
        assert!(
            idle(&sim) || sim.owner.committed_seq() > 100,
            "seed {seed}: enough happened"
        );
    }
}

#[test]
fn clients_converge_across_reconnects_and_resends() {
    let mut reconnects = 0;
    for seed in 100..=105 + extra_seeds() {
        let sim = run(seed, 4, 3_000, 0, 3);
        reconnects += sim.reconnects;
    }
    assert!(
        reconnects > 10 || std::env::var_os("SIM_ONLY").is_some(),
        "reconnects happened: {reconnects}"
    );
}

#[test]
fn clients_converge_when_commits_fail() {
    let mut failures = 0;
    for seed in 200..=205 + extra_seeds() {
        let sim = run(seed, 4, 3_000, 10, 0);
        failures += sim.failures;
    }
    assert!(
        failures > 10 || std::env::var_os("SIM_ONLY").is_some(),
        "commits failed: {failures}"
    );
}
