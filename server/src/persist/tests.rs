//! Tests of the persistence thread against real repositories in temporary
//! folders, read back by `start`, by `verify` and by the `git` binary.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use crossbeam::channel::{unbounded, Receiver};
use gitmind_schema::message::{
    Body, EdgeCreate, EdgeDelete, NodeCreate, NodeDelete, NodeUpdate, UpdateConfirmed,
};
use gitmind_schema::model::{Edge, Node, NodeSet};
use gitmind_schema::Envelope;

use super::*;
use gitmind_owner::change::{fill_commit, ChangeRecord, Write};

/// The graph as the owner would hold it, to compare with what comes back.
#[derive(Default)]
struct Model {
    seq: u64,
    nodes: BTreeMap<String, Node>,
    edges: BTreeMap<String, Edge>,
}

impl Model {
    fn change(&mut self, body: Body, writes: Vec<Write>) -> Arc<ChangeRecord> {
        self.seq += 1;
        let seq = self.seq;
        for w in &writes {
            match w {
                Write::Node(n) => {
                    self.nodes.insert(n.id.clone(), (**n).clone());
                }
                Write::NodeDeleted(id) => {
                    self.nodes.remove(id);
                }
                Write::Edge(e) => {
                    self.edges
                        .insert(e.id.clone().unwrap_or_default(), (**e).clone());
                }
                Write::EdgeDeleted(id) => {
                    self.edges.remove(id);
                }
            }
        }
        let mut event = Envelope::new(format!("m{seq}"), body);
        event.seq = Some(seq);
        event.user_id = Some("alice".into());
        event.session_id = Some("s-1".into());
        let mut outcome = Envelope::new(
            format!("o{seq}"),
            Body::UpdateConfirmed(UpdateConfirmed {
                reference: format!("m{seq}"),
                seq,
                commit: String::new(),
                rev: seq,
                text: None,
            }),
        );
        outcome.seq = Some(seq);
        Arc::new(ChangeRecord {
            seq,
            at_ms: 1_764_158_000_000 + seq * 10,
            user_id: "alice".into(),
            session_id: "s-1".into(),
            mutation_id: format!("m{seq}"),
            event,
            outcome,
            writes,
        })
    }

    fn create_node(&mut self, id: &str) -> Arc<ChangeRecord> {
        let node = Node {
            id: id.into(),
            kind: Some("concept".into()),
            label: Some(format!("label of {id}")),
            x: Some(1.5),
            rev: Some(self.seq + 1),
            created_by: Some("alice".into()),
            ..Node::default()
        };
        self.change(
            Body::NodeCreate(NodeCreate {
                base_seq: None,
                node: node.clone(),
                commit: None,
            }),
            vec![Write::Node(Arc::new(node))],
        )
    }

    fn update_node(&mut self, id: &str, label: &str) -> Arc<ChangeRecord> {
        let mut node = self.nodes.get(id).cloned().unwrap_or_default();
        node.label = Some(label.into());
        node.rev = Some(self.seq + 1);
        let set = NodeSet {
            label: Some(label.into()),
            ..NodeSet::default()
        };
        self.change(
            Body::NodeUpdate(NodeUpdate {
                id: id.into(),
                set: Some(set),
                rev: Some(self.seq + 1),
                ..NodeUpdate::default()
            }),
            vec![Write::Node(Arc::new(node))],
        )
    }

    fn delete_node(&mut self, id: &str) -> Arc<ChangeRecord> {
        let edges: Vec<String> = self
            .edges
            .iter()
            .filter(|(_, e)| e.source == id || e.target == id)
            .map(|(k, _)| k.clone())
            .collect();
        let mut writes: Vec<Write> = edges
            .iter()
            .map(|e| Write::EdgeDeleted(e.clone()))
            .collect();
        writes.push(Write::NodeDeleted(id.into()));
        self.change(
            Body::NodeDelete(NodeDelete {
                base_seq: None,
                id: id.into(),
                commit: None,
            }),
            writes,
        )
    }

    fn create_edge(&mut self, s: &str, t: &str) -> Arc<ChangeRecord> {
        let id = Edge::make_id(s, "relates-to", t);
        let edge = Edge {
            id: Some(id),
            source: s.into(),
            edge_type: "relates-to".into(),
            target: t.into(),
            confidence: Some(0.5),
            rev: Some(self.seq + 1),
            ..Edge::default()
        };
        self.change(
            Body::EdgeCreate(EdgeCreate {
                base_seq: None,
                edge: edge.clone(),
                commit: None,
            }),
            vec![Write::Edge(Arc::new(edge))],
        )
    }

    fn delete_edge(&mut self, id: &str) -> Arc<ChangeRecord> {
        self.change(
            Body::EdgeDelete(EdgeDelete {
                id: Some(id.into()),
                ..EdgeDelete::default()
            }),
            vec![Write::EdgeDeleted(id.into())],
        )
    }

    fn assert_restored(&self, r: &Restored) {
        assert_eq!(r.seq, self.seq);
        let nodes: BTreeMap<String, Node> =
            r.nodes.iter().map(|n| (n.id.clone(), n.clone())).collect();
        let edges: BTreeMap<String, Edge> = r
            .edges
            .iter()
            .map(|e| (e.id.clone().unwrap_or_default(), e.clone()))
            .collect();
        assert_eq!(nodes.len(), r.nodes.len(), "duplicate nodes");
        assert_eq!(nodes, self.nodes);
        assert_eq!(edges, self.edges);
    }
}

fn group(graph: &str, changes: Vec<Arc<ChangeRecord>>) -> Group {
    Group {
        graph: graph.into(),
        epoch: "ep-1".into(),
        changes,
    }
}

fn config(dir: &Path) -> PersistConfig {
    PersistConfig {
        fsync: false,
        ..PersistConfig::new(dir)
    }
}

fn start(config: PersistConfig) -> (Persister, Vec<Restored>, Receiver<PersistEvent>) {
    let (tx, rx) = unbounded();
    let (p, restored) = Persister::start(config, tx).expect("start");
    (p, restored, rx)
}

/// Waits for the next event.
fn next(rx: &Receiver<PersistEvent>) -> PersistEvent {
    rx.recv_timeout(Duration::from_secs(20))
        .expect("an event within 20 s")
}

/// Waits until `graph` is committed up to `upto`; returns the commits seen.
fn committed(rx: &Receiver<PersistEvent>, graph: &str, upto: u64) -> Vec<(u64, String)> {
    let mut seen = Vec::new();
    loop {
        match next(rx) {
            PersistEvent::Committed {
                graph: g,
                upto: u,
                commit,
            } if g == graph => {
                seen.push((u, commit));
                if u >= upto {
                    return seen;
                }
            }
            PersistEvent::Committed { .. } => {}
            e @ PersistEvent::Failed { .. } => panic!("unexpected {e:?}"),
        }
    }
}

fn git(repo: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new("git")
        .arg("--git-dir")
        .arg(repo)
        .args(args)
        .output()
        .expect("the git binary");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn find<'a>(restored: &'a [Restored], graph: &str) -> &'a Restored {
    restored
        .iter()
        .find(|r| r.graph == graph)
        .expect("graph restored")
}

#[test]
fn round_trip_restores_graph_seq_epoch_and_journal() {
    let dir = tempfile::tempdir().unwrap();
    let (p, restored, rx) = start(PersistConfig {
        fsync: true,
        ..PersistConfig::new(dir.path())
    });
    assert!(restored.is_empty());
    let mut m = Model::default();
    let mut all = Vec::new();
    let g1 = vec![
        m.create_node("pkg:a"),
        m.create_node("pkg:b"),
        m.create_edge("pkg:a", "pkg:b"),
    ];
    let g2 = vec![m.update_node("pkg:a", "A"), m.create_node("pkg:c")];
    let g3 = vec![m.create_edge("pkg:c", "pkg:a"), m.delete_node("pkg:b")];
    all.extend(g1.iter().chain(&g2).chain(&g3).cloned());
    p.submit(group("g", g1));
    p.submit(group("g", g2));
    p.submit(group("g", g3));
    let commits = committed(&rx, "g", 7);
    p.shutdown().unwrap();

    let (p, restored, _rx) = start(config(dir.path()));
    let r = find(&restored, "g");
    assert_eq!(r.epoch, "ep-1");
    m.assert_restored(r);
    assert_eq!(r.journal.len(), 7);
    let mut lo = 1;
    for (upto, commit) in &commits {
        for rec in &r.journal[(lo - 1) as usize..*upto as usize] {
            let original = &all[(rec.seq - 1) as usize];
            let mut event = original.event.clone();
            fill_commit(&mut event, commit);
            let mut outcome = original.outcome.clone();
            fill_commit(&mut outcome, commit);
            assert_eq!(rec.event, event);
            assert_eq!(rec.outcome, outcome);
            assert_eq!(
                (rec.seq, rec.at_ms, &rec.user_id, &rec.mutation_id),
                (
                    original.seq,
                    original.at_ms,
                    &original.user_id,
                    &original.mutation_id
                )
            );
            // Only the deletions come back as writes (the owner's tombstones).
            let deletions: Vec<_> = original
                .writes
                .iter()
                .filter(|w| matches!(w, Write::NodeDeleted(_) | Write::EdgeDeleted(_)))
                .cloned()
                .collect();
            assert_eq!(rec.writes, deletions);
        }
        lo = upto + 1;
    }
    drop(p);
    let report = verify(dir.path()).unwrap();
    assert_eq!(report.graphs[0].seq, 7);
    assert_eq!((report.graphs[0].nodes, report.graphs[0].edges), (2, 1));
}

#[test]
fn tree_equals_model_after_many_changes_and_groupings() {
    let dir = tempfile::tempdir().unwrap();
    let (p, _, rx) = start(PersistConfig {
        max_group_changes: 7,
        ..config(dir.path())
    });
    let mut m = Model::default();
    let mut rng = gitmind_testkit::Rng::new(0x2545_f491_4f6c_dd1d);
    let mut rand = move |n: usize| rng.below(n);
    let mut pending = Vec::new();
    for _ in 0..400 {
        let ids: Vec<String> = m.nodes.keys().cloned().collect();
        let change = match (rand(10), ids.len()) {
            (_, 0..=2) | (0..=3, _) => m.create_node(&format!("n:{}", rand(1000))),
            (4..=5, n) => {
                let (s, t) = (&ids[rand(n)], &ids[rand(n)]);
                m.create_edge(s, t)
            }
            (6, n) => m.delete_node(&ids[rand(n)].clone()),
            (7, _) if !m.edges.is_empty() => {
                let e = m.edges.keys().next().cloned().unwrap_or_default();
                m.delete_edge(&e)
            }
            (_, n) => m.update_node(&ids[rand(n)].clone(), &format!("v{}", rand(99))),
        };
        pending.push(change);
        if rand(4) == 0 {
            p.submit(group("big", std::mem::take(&mut pending)));
        }
    }
    p.submit(group("big", pending));
    committed(&rx, "big", m.seq);
    drop(p);
    let (_p, restored, _) = start(config(dir.path()));
    m.assert_restored(find(&restored, "big"));
    let report = verify(dir.path()).unwrap();
    assert_eq!(report.graphs[0].changes, m.seq);
    let (ok, out) = git(
        &config(dir.path()).repo_path(),
        &["fsck", "--strict", "--no-dangling"],
    );
    assert!(ok, "{out}");
}

#[test]
fn awkward_ids_are_stored_exactly_and_stay_in_their_folders() {
    let dir = tempfile::tempdir().unwrap();
    let (p, _, rx) = start(config(dir.path()));
    let long_a = format!("x:{}", "é".repeat(127));
    let long_b = format!("x:{}è", "é".repeat(126));
    let long_c = format!("x:{}", "a".repeat(254));
    let ids = [
        "x:a/b/../../c",
        "x:..",
        "..",
        ".",
        ".hidden",
        "x:ü✓ 空",
        "x:%2F",
        "x:+",
        "x:a+b",
        "x:a:b",
        "x:~",
        "x:\\",
        long_a.as_str(),
        long_b.as_str(),
        long_c.as_str(),
    ];
    let mut m = Model::default();
    let mut changes: Vec<_> = ids.iter().map(|id| m.create_node(id)).collect();
    changes.push(m.create_edge(ids[0], ids[12]));
    changes.push(m.create_edge(ids[12], ids[13]));
    p.submit(group("odd", changes));
    committed(&rx, "odd", m.seq);
    drop(p);
    let (_p, restored, _) = start(config(dir.path()));
    m.assert_restored(find(&restored, "odd"));
    let (ok, out) = git(
        &config(dir.path()).repo_path(),
        &["ls-tree", "-r", "--name-only", "refs/gitmind/graphs/odd"],
    );
    assert!(ok, "{out}");
    assert_eq!(out.lines().count(), ids.len() + 2);
    for path in out.lines() {
        let parts: Vec<&str> = path.split('/').collect();
        assert_eq!(parts.len(), 6, "{path}");
        assert!(parts[0] == "nodes" || parts[0] == "edges", "{path}");
        assert!(parts[1..5].iter().all(|d| d.len() == 1), "{path}");
        assert!(
            layout::is_entity_name(parts[5].as_bytes()) && parts[5].len() <= 255,
            "{path}"
        );
    }
    verify(dir.path()).unwrap();
}

#[test]
fn plain_git_reads_history_trailers_and_files() {
    let dir = tempfile::tempdir().unwrap();
    let (p, _, rx) = start(config(dir.path()));
    let mut m = Model::default();
    p.submit(group(
        "g",
        vec![m.create_node("pkg:libc6"), m.create_node("pkg:bash")],
    ));
    committed(&rx, "g", 2);
    p.submit(group(
        "g",
        vec![m.update_node("pkg:libc6", "GNU C Library")],
    ));
    let commits = committed(&rx, "g", 3);
    drop(p);
    let repo = config(dir.path()).repo_path();
    let (ok, log) = git(&repo, &["log", "--format=%B", "refs/gitmind/graphs/g"]);
    assert!(ok, "{log}");
    assert!(log.contains("alice: node.update pkg:libc6\n"), "{log}");
    assert!(
        log.contains("alice: node.create pkg:libc6, +1 more\n"),
        "{log}"
    );
    assert!(
        log.contains("Gitmind-Seq: 3..3\nGitmind-Epoch: ep-1\n"),
        "{log}"
    );
    assert!(log.contains("Gitmind-Seq: 1..2\n"), "{log}");
    let (ok, trailers) = git(
        &repo,
        &[
            "log",
            "-1",
            "--format=%(trailers:key=Gitmind-Seq,valueonly)",
            "refs/gitmind/graphs/g",
        ],
    );
    assert!(ok && trailers.trim() == "3..3", "{trailers}");
    let (ok, show) = git(&repo, &["show", "refs/gitmind/graphs/g"]);
    assert!(ok, "{show}");
    assert!(show.contains("+  \"label\": \"GNU C Library\","), "{show}");
    assert!(
        show.contains(&commits[0].1[..7]) || show.contains("commit "),
        "{show}"
    );
    let path = layout::EntityPath::of(layout::Kind::Node, "pkg:libc6").to_path();
    let (ok, file) = git(
        &repo,
        &["cat-file", "-p", &format!("refs/gitmind/graphs/g:{path}")],
    );
    assert!(ok && file.contains("\"id\": \"pkg:libc6\""), "{file}");
    let (ok, out) = git(&repo, &["fsck", "--strict"]);
    assert!(ok, "{out}");
}

#[test]
fn a_failed_commit_moves_no_ref_and_the_thread_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let (p, _, rx) = start(config(dir.path()));
    let repo = config(dir.path()).repo_path();
    let mut m = Model::default();
    p.submit(group("g", vec![m.create_node("n:1"), m.create_node("n:2")]));
    let good = committed(&rx, "g", 2);
    let tip = good[0].1.clone();

    // Make the pack folder unusable: a file where the folder was. Root
    // ignores permissions; it cannot create a file inside a file.
    let pack_dir = repo.join("objects/pack");
    let aside = repo.join("objects/pack.aside");
    std::fs::rename(&pack_dir, &aside).unwrap();
    std::fs::write(&pack_dir, b"not a folder").unwrap();
    let lost = m.create_node("n:3");
    p.submit(group("g", vec![lost]));
    match next(&rx) {
        PersistEvent::Failed {
            graph,
            from_seq,
            error,
        } => {
            assert_eq!((graph.as_str(), from_seq), ("g", 3));
            assert!(
                matches!(&error, CommitError::Storage(e) if e.contains("pack")),
                "{error}"
            );
        }
        e => panic!("expected Failed, got {e:?}"),
    }
    let (_, head) = git(&repo, &["rev-parse", "refs/gitmind/graphs/g"]);
    assert_eq!(head.trim(), tip);
    // Ordered before the owner heard of the failure: dropped, no event.
    let mut stale = Model {
        seq: 3,
        ..Model::default()
    };
    p.submit(group("g", vec![stale.create_node("n:4")]));

    std::fs::remove_file(&pack_dir).unwrap();
    std::fs::rename(&aside, &pack_dir).unwrap();
    // The owner rolled back to seq 2 and goes on from 3.
    m.seq = 2;
    m.nodes.remove("n:3");
    p.submit(group("g", vec![m.create_node("n:5")]));
    match next(&rx) {
        PersistEvent::Committed { upto, .. } => assert_eq!(upto, 3),
        e => panic!("expected Committed 3, got {e:?}"),
    }
    let stats = p.stats().snapshot();
    assert_eq!((stats.failures, stats.commits, stats.changes), (1, 2, 3));
    drop(p);
    // A crash during a ref update leaves its lock: start removes it.
    std::fs::write(repo.join("refs/gitmind/graphs/g.lock"), b"").unwrap();
    let (p, _, rx) = start(config(dir.path()));
    p.submit(group("g", vec![m.create_node("n:6")]));
    assert!(matches!(next(&rx), PersistEvent::Committed { upto: 4, .. }));
    drop(p);
    let (_p, restored, _) = start(config(dir.path()));
    m.assert_restored(find(&restored, "g"));
    verify(dir.path()).unwrap();
}

#[test]
fn out_of_order_and_unstorable_groups_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (p, _, rx) = start(config(dir.path()));
    let mut m = Model {
        seq: 4,
        ..Model::default()
    };
    p.submit(group("g", vec![m.create_node("n:5")]));
    assert!(matches!(
        next(&rx),
        PersistEvent::Failed { from_seq: 5, .. }
    ));
    let mut m = Model::default();
    p.submit(group("a..b", vec![m.create_node("n:1")]));
    assert!(
        matches!(next(&rx), PersistEvent::Failed { from_seq: 1, ref graph, .. } if graph == "a..b")
    );
    let mut m = Model::default();
    p.submit(Group {
        epoch: "two\nlines".into(),
        ..group("g", vec![m.create_node("n:1")])
    });
    assert!(matches!(
        next(&rx),
        PersistEvent::Failed { from_seq: 1, .. }
    ));
    let mut m = Model::default();
    p.submit(group("g", vec![m.create_node("n:1")]));
    assert!(matches!(next(&rx), PersistEvent::Committed { upto: 1, .. }));
    assert_eq!(p.stats().snapshot().refused, 3);
}

#[test]
fn refusals_fail_in_order_and_cover_later_groups() {
    let dir = tempfile::tempdir().unwrap();
    let (tx, rx) = unbounded();
    let cfg = config(dir.path());
    open_or_init(&cfg).unwrap();
    let (_tx_unused, rx_unused) = unbounded();
    let mut w = Worker {
        merger: repack::Merger::start(
            cfg.repo_path().join("objects/pack"),
            32,
            false,
            0,
            Arc::default(),
        )
        .unwrap(),
        pack_dir: cfg.repo_path().join("objects/pack"),
        repo_path: cfg.repo_path(),
        config: cfg,
        graphs: HashMap::new(),
        rx: rx_unused,
        events: tx,
        stats: Arc::default(),
    };
    let mut m = Model::default();
    let (a, b, c) = (
        m.create_node("n:1"),
        m.create_node("n:2"),
        m.create_node("n:3"),
    );
    // 1 is taken; 2 was refused at submit (queue full); 3 was ordered after 2.
    w.round(vec![
        Msg::Group(group("g", vec![a])),
        Msg::Refused {
            graph: "g".into(),
            from_seq: 2,
            error: CommitError::QueueFull { waiting: 1 },
        },
        Msg::Group(group("g", vec![c])),
    ]);
    assert!(matches!(
        rx.try_recv(),
        Ok(PersistEvent::Committed { upto: 1, .. })
    ));
    assert!(matches!(
        rx.try_recv(),
        Ok(PersistEvent::Failed { from_seq: 2, .. })
    ));
    assert!(
        rx.try_recv().is_err(),
        "seq 3 is covered by the failure of 2"
    );
    // A late refusal of a covered group says nothing; the owner restarts at 2.
    w.round(vec![
        Msg::Refused {
            graph: "g".into(),
            from_seq: 4,
            error: CommitError::QueueFull { waiting: 1 },
        },
        Msg::Group(group("g", vec![b])),
    ]);
    assert!(matches!(
        rx.try_recv(),
        Ok(PersistEvent::Committed { upto: 2, .. })
    ));
    assert!(rx.try_recv().is_err());
}

#[test]
fn replay_window_keeps_the_newest_changes() {
    let dir = tempfile::tempdir().unwrap();
    let (p, _, rx) = start(config(dir.path()));
    let mut m = Model::default();
    for i in 0..10 {
        p.submit(group(
            "g",
            (0..3)
                .map(|j| m.create_node(&format!("n:{i}-{j}")))
                .collect(),
        ));
    }
    committed(&rx, "g", 30);
    drop(p);
    // 10 ms between changes: 45 ms covers the last 5; 7 changes are more.
    let (_p, restored, _) = start(PersistConfig {
        replay_changes: 7,
        replay_ms: 45,
        ..config(dir.path())
    });
    let seqs: Vec<u64> = find(&restored, "g").journal.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, (24..=30).collect::<Vec<_>>());
    let (_p2, restored, _) = start(PersistConfig {
        replay_changes: 2,
        replay_ms: 45,
        ..config(dir.path())
    });
    let seqs: Vec<u64> = find(&restored, "g").journal.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, (26..=30).collect::<Vec<_>>());
}

#[test]
fn many_small_commits_keep_few_packs() {
    let dir = tempfile::tempdir().unwrap();
    let (p, _, rx) = start(PersistConfig {
        max_packs: 4,
        ..config(dir.path())
    });
    let mut m = Model::default();
    for i in 0..40 {
        p.submit(group("g", vec![m.create_node(&format!("n:{i}"))]));
        committed(&rx, "g", m.seq);
    }
    p.submit(group("g", vec![m.update_node("n:1", "x")]));
    committed(&rx, "g", m.seq);
    // Stopping waits for the merger, which merges until few packs are left
    // even when the last packs were written while it was busy.
    let stats = p.stats();
    drop(p);
    let merged = stats.snapshot().packs_merged;
    let packs = pack::list_packs(&config(dir.path()).repo_path().join("objects/pack")).unwrap();
    assert!(
        merged > 0 && packs.len() <= 6,
        "{} packs after {merged} merges",
        packs.len()
    );
    let (_p, restored, _) = start(config(dir.path()));
    m.assert_restored(find(&restored, "g"));
    verify(dir.path()).unwrap();
}

#[test]
fn verify_fails_on_tampered_repositories() {
    let dir = tempfile::tempdir().unwrap();
    let (p, _, rx) = start(config(dir.path()));
    let mut m = Model::default();
    p.submit(group("g", vec![m.create_node("n:1"), m.create_node("n:2")]));
    committed(&rx, "g", 2);
    drop(p);
    verify(dir.path()).unwrap();

    // A commit whose tree changed a file without a journal line for it.
    let repo = Repository::open_bare(config(dir.path()).repo_path()).unwrap();
    let tip = repo.refname_to_id("refs/gitmind/graphs/g").unwrap();
    let commit = repo.find_commit(tip).unwrap();
    let path = layout::EntityPath::of(layout::Kind::Node, "n:1").to_path();
    let entry = commit.tree().unwrap().get_path(Path::new(&path)).unwrap();
    let blob = repo.find_blob(entry.id()).unwrap();
    let edited = String::from_utf8_lossy(blob.content()).replace("label of n:1", "edited by hand");
    let new_blob = repo.blob(edited.as_bytes()).unwrap();
    let tree = replace_path(&repo, &commit.tree().unwrap(), &path, new_blob);
    let sig = git2::Signature::now("eve", "eve@example.invalid").unwrap();
    let msg = commit.message().unwrap().to_owned();
    let forged = repo
        .commit(
            None,
            &sig,
            &sig,
            &msg,
            &repo.find_tree(tree).unwrap(),
            &[&commit],
        )
        .unwrap();
    repo.reference("refs/gitmind/graphs/g", forged, true, "tamper")
        .unwrap();
    let Err(VerifyError::Inconsistent { problems }) = verify(dir.path()) else {
        panic!("verify passed a tampered repo")
    };
    assert!(
        problems
            .iter()
            .any(|p| p.contains("journal does not say so")),
        "{problems:?}"
    );

    // A file moved out of its fan-out folder.
    let misplaced = replace_path(
        &repo,
        &commit.tree().unwrap(),
        "nodes/0/0/0/0/n+1.json",
        entry.id(),
    );
    let forged = repo
        .commit(
            None,
            &sig,
            &sig,
            &msg,
            &repo.find_tree(misplaced).unwrap(),
            &[&commit],
        )
        .unwrap();
    repo.reference("refs/gitmind/graphs/g", forged, true, "tamper")
        .unwrap();
    let Err(VerifyError::Inconsistent { problems }) = verify(dir.path()) else {
        panic!("verify passed a misplaced file")
    };
    assert!(
        problems
            .iter()
            .any(|p| p.contains("not where its id puts it")),
        "{problems:?}"
    );

    // A merge: the history is no longer one chain.
    let merge = repo
        .commit(
            None,
            &sig,
            &sig,
            &msg,
            &commit.tree().unwrap(),
            &[&commit, &commit],
        )
        .unwrap();
    repo.reference("refs/gitmind/graphs/g", merge, true, "tamper")
        .unwrap();
    let Err(VerifyError::Inconsistent { problems }) = verify(dir.path()) else {
        panic!("verify passed a merge")
    };
    assert!(
        problems.iter().any(|p| p.contains("not one chain")),
        "{problems:?}"
    );
}

/// A copy of `tree` with the blob at `path` set to `blob`.
fn replace_path(
    repo: &Repository,
    tree: &git2::Tree<'_>,
    path: &str,
    blob: git2::Oid,
) -> git2::Oid {
    let (head, rest) = path
        .split_once('/')
        .map_or((path, None), |(h, r)| (h, Some(r)));
    let mut builder = repo.treebuilder(Some(tree)).unwrap();
    match rest {
        None => {
            builder.insert(head, blob, 0o100644).unwrap();
        }
        Some(rest) => {
            let sub = match tree.get_name(head) {
                Some(e) => repo.find_tree(e.id()).unwrap(),
                None => repo
                    .find_tree(repo.treebuilder(None).unwrap().write().unwrap())
                    .unwrap(),
            };
            let id = replace_path(repo, &sub, rest, blob);
            builder.insert(head, id, 0o040000).unwrap();
        }
    }
    builder.write().unwrap()
}

#[test]
fn graph_names_follow_the_protocol_and_git() {
    for ok in ["g", "debian", "a.b", "a_b-c", "0"] {
        assert!(is_valid_graph_name(ok), "{ok}");
    }
    for bad in [
        "",
        "A",
        ".a",
        "a..b",
        "a.lock",
        "a.",
        "a/b",
        &"a".repeat(65),
    ] {
        assert!(!is_valid_graph_name(bad), "{bad}");
    }
}

#[test]
fn several_graphs_commit_independently() {
    let dir = tempfile::tempdir().unwrap();
    let (p, _, rx) = start(config(dir.path()));
    let (mut a, mut b) = (Model::default(), Model::default());
    for i in 0..5 {
        p.submit(group("alpha", vec![a.create_node(&format!("a:{i}"))]));
        p.submit(Group {
            epoch: "ep-b".into(),
            ..group(
                "beta",
                vec![
                    b.create_node(&format!("b:{i}")),
                    b.create_node(&format!("c:{i}")),
                ],
            )
        });
    }
    let (mut upto_a, mut upto_b) = (0, 0);
    while upto_a < a.seq || upto_b < b.seq {
        match next(&rx) {
            PersistEvent::Committed { graph, upto, .. } if graph == "alpha" => upto_a = upto,
            PersistEvent::Committed { graph, upto, .. } if graph == "beta" => upto_b = upto,
            e => panic!("unexpected {e:?}"),
        }
    }
    drop(p);
    let (_p, restored, _) = start(config(dir.path()));
    a.assert_restored(find(&restored, "alpha"));
    b.assert_restored(find(&restored, "beta"));
    assert_eq!(find(&restored, "beta").epoch, "ep-b");
    assert_eq!(verify(dir.path()).unwrap().graphs.len(), 2);
}

/// Waits for the answer to a load.
fn loaded(rx: &Receiver<Loaded>) -> Loaded {
    rx.recv_timeout(Duration::from_secs(20))
        .expect("a load answered within 20 s")
}

#[test]
fn graphs_load_on_demand_commit_on_their_tip_and_unload() {
    let dir = tempfile::tempdir().unwrap();
    let (p, _, rx) = start(config(dir.path()));
    let mut m = Model::default();
    p.submit(group(
        "kept",
        vec![m.create_node("n:1"), m.create_node("n:2")],
    ));
    committed(&rx, "kept", 2);
    drop(p);

    let (tx, rx) = unbounded();
    let (p, names) = Persister::open(config(dir.path()), tx).expect("open");
    assert_eq!(names, ["kept"], "listed, not loaded");
    let (reply, answers) = unbounded();
    p.load("kept", &reply);
    p.load("nowhere", &reply);
    let first = loaded(&answers);
    assert_eq!(first.graph, "kept");
    m.assert_restored(first.result.as_ref().unwrap().as_ref().unwrap());
    let second = loaded(&answers);
    assert_eq!(second.graph, "nowhere");
    assert!(matches!(second.result, Ok(None)));

    // Loaded, it commits on its tip.
    p.submit(group("kept", vec![m.update_node("n:1", "one")]));
    committed(&rx, "kept", 3);
    // Unloaded and loaded again (in this order, after the commit), it has
    // everything.
    p.unload("kept");
    p.load("kept", &reply);
    let again = loaded(&answers);
    m.assert_restored(again.result.as_ref().unwrap().as_ref().unwrap());
    p.submit(group("kept", vec![m.delete_node("n:2")]));
    committed(&rx, "kept", 4);
    drop(p);
    assert_eq!(verify(dir.path()).unwrap().graphs.len(), 1);
    let (_p, restored, _) = start(config(dir.path()));
    m.assert_restored(find(&restored, "kept"));
}

#[test]
fn a_load_after_the_thread_stopped_is_answered_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let (tx, _rx) = unbounded();
    let (mut p, _) = Persister::open(config(dir.path()), tx).expect("open");
    // What `Drop` leaves: the thread gone, the handle still here.
    p.stop().unwrap();
    let (reply, answers) = unbounded();
    p.load("late", &reply);
    assert!(matches!(loaded(&answers).result, Err(LoadError::Stopped)));
}
