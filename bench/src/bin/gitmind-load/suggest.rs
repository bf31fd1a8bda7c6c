//! `gitmind-load suggest`: the link-suggestion evaluation of issue 18, end
//! to end through the protocol (docs/protocol.md 9), written to
//! `perf-reports/gonzai.md`.
//!
//! The split: the sources with at least two `depends-on` edges, sorted by
//! id, shuffled (Fisher-Yates, splitmix64 seeded with `--seed`); in that
//! order, each source draws one of its `depends-on` targets (in file order)
//! uniformly, and the pair is held out when the source has no other edge
//! to that target, until `--queries` pairs are held. Everything else is
//! imported; each held-out source is asked `{for: s, limit: 50}` and the
//! rank of its target is read after dropping `s` and what `s` links to.
//! "Harder" queries are those whose target is not among the 100 most
//! depended-on nodes of the imported graph.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use gitmind_bench::conn::{Codec, Conn};
use gitmind_bench::machine::Machine;
use gitmind_bench::server::ServerUnderTest;
use gitmind_client::dataset::Dataset;
use gitmind_client::import::Importer;
use gitmind_client::{Client, ClientConfig};
use gitmind_schema::message::GonzaiSuggestion;
use gitmind_schema::{Body, Envelope};
use gitmind_server::gonzai::suggest::SplitMix;

/// The held-out pairs, the imported edges, the 100 most depended-on
/// nodes and what each source links to, of the split of `seed`.
type Split<'a> = (
    Vec<(&'a str, &'a str)>,
    Vec<gitmind_schema::model::Edge>,
    HashSet<&'a str>,
    HashMap<&'a str, HashSet<&'a str>>,
);

/// What `--offline` fits on the training graph.
pub struct Training {
    /// Hidden links to fit the linear weights on (0: the shipped weights).
    pub fit: usize,
    /// Fit only the weights from this feature on (0: all).
    pub fit_from: usize,
    /// Hide links of this type only (any type when `None`).
    pub edge_type: Option<String>,
    /// Where to write the ranking inputs, and of how many hidden links
    /// (see `dump`).
    pub dump: Option<(String, usize)>,
}

/// Tuning without a server: the model built in process from the training
/// graph of the split of `seed` (its weights fitted on that graph's own
/// links as `train` says), asked for each held-out source.
pub fn offline(
    dataset: &std::path::Path,
    seed: u64,
    queries: usize,
    train: &Training,
) -> anyhow::Result<()> {
    use gitmind_server::gonzai::suggest::Model;
    let data = Dataset::read(dataset).with_context(|| format!("reading {}", dataset.display()))?;
    let split = split(&data, seed, queries);
    let started = Instant::now();
    let mut model = Model::build(
        data.nodes.iter().map(gitmind_server::gonzai::text_of),
        split
            .1
            .iter()
            .map(|e| (e.source.as_str(), e.edge_type.as_str(), e.target.as_str())),
        0,
        0,
    );
    if train.fit > 0 {
        model.fit_on(
            train.fit,
            seed ^ 0x5eed,
            train.edge_type.as_deref(),
            train.fit_from,
        );
    }
    println!("built (fit {}) in {:.1?}", train.fit, started.elapsed());
    println!("weights: {:.2?}", model.weights());
    // The same figure on links hidden in the training graph (what the fit
    // learns from), to compare with the held-out one; the linear model's.
    model.use_trees(false);
    let (n, inner) = model.hidden_hits10(1000, seed ^ 0x1ea7, train.edge_type.as_deref());
    println!("linear hits@10 on {n} links hidden in the training graph: {inner:.3}");
    evaluate(&model, &split, seed, "linear");
    model.use_trees(true);
    evaluate(&model, &split, seed, "trees");
    if let Some((path, links)) = &train.dump {
        dump(&mut model, &split, seed, path, *links)?;
    }
    Ok(())
}

/// What `bench/gonzai-ranker/train.py` fits the trees on: every
/// candidate's inputs, of the held-out queries (`PATH.eval`) and of links
/// hidden in the training graph (`PATH.train`, the best 200 of each), as
/// rows of little-endian f32: query, label, harder, then the trees' inputs
/// (`Model::ranked`), best linear score first; their names go to
/// `PATH.names`. Training links are hidden as the split hides its queries:
/// a thousand links of distinct sources taken out of the graph at once,
/// then put back.
fn dump(
    model: &mut gitmind_server::gonzai::suggest::Model,
    split: &Split<'_>,
    seed: u64,
    path: &str,
    n: usize,
) -> anyhow::Result<()> {
    use gitmind_server::gonzai::suggest::{Model, Scratch};
    let (held, _, top100, _) = split;
    let mut sc = Scratch::default();
    let rows = |model: &Model,
                sc: &mut Scratch,
                q: usize,
                s: u32,
                t: u32,
                keep: usize,
                out: &mut Vec<u8>| {
        let harder = f32::from(!top100.contains(model.id(t)));
        for r in model.ranked(sc, s, None).into_iter().take(keep) {
            let head = [q as f32, f32::from(r.node == t), harder];
            for v in head.iter().chain(r.inputs.iter()) {
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
    };
    let mut out = Vec::new();
    for (q, &(s, t)) in held.iter().enumerate() {
        if let (Some(s), Some(t)) = (model.node(s), model.node(t)) {
            rows(model, &mut sc, q, s, t, usize::MAX, &mut out);
        }
    }
    std::fs::write(format!("{path}.eval"), std::mem::take(&mut out))?;
    let links = model.hidden_links(n, seed ^ 0x7a11, Some("depends-on"));
    let mut q = 0;
    for batch in links.chunks(1000) {
        let mut seen = HashSet::new();
        let batch: Vec<(u32, u32)> = batch
            .iter()
            .copied()
            .filter(|(s, _)| seen.insert(*s))
            .collect();
        let ids: Vec<(String, String)> = batch
            .iter()
            .map(|&(s, t)| (model.id(s).to_string(), model.id(t).to_string()))
            .collect();
        for (s, t) in &ids {
            model.remove_edge(s, "depends-on", t);
        }
        for &(s, t) in &batch {
            rows(model, &mut sc, q, s, t, 200, &mut out);
            q += 1;
        }
        for (s, t) in &ids {
            model.add_edge(s, "depends-on", t);
        }
    }
    std::fs::write(format!("{path}.train"), out)?;
    let names = gitmind_server::gonzai::suggest::input_names();
    std::fs::write(format!("{path}.names"), names.join("\n") + "\n")?;
    println!("dumped {q} training and {} held-out queries", held.len());
    Ok(())
}

/// The figures of a run, from the target's rank in each answer (after the
/// source and its own links are dropped), the same offline and through
/// the protocol.
#[derive(Default)]
struct Tally {
    h1: usize,
    h10: usize,
    h50: usize,
    mrr: f64,
    /// Queries whose target is not among the 100 most depended-on nodes.
    harder: usize,
    harder_h10: usize,
}

impl Tally {
    /// Counts one query: the target's rank among the first 50, if there.
    fn add(&mut self, rank: Option<usize>, harder: bool) {
        if let Some(r) = rank {
            self.h1 += usize::from(r < 1);
            self.h10 += usize::from(r < 10);
            self.h50 += 1;
            self.mrr += 1.0 / (r as f64 + 1.0);
        }
        if harder {
            self.harder += 1;
            self.harder_h10 += usize::from(rank.is_some_and(|r| r < 10));
        }
    }
}

/// Prints the figures of `model` on the held-out pairs of `split`.
fn evaluate(
    model: &gitmind_server::gonzai::suggest::Model,
    split: &Split<'_>,
    seed: u64,
    what: &str,
) {
    let (held, _, top100, links) = split;
    let mut sc = gitmind_server::gonzai::suggest::Scratch::default();
    let mut tally = Tally::default();
    let mut times = Vec::with_capacity(held.len());
    let mut ranks = Vec::with_capacity(held.len());
    let study = std::env::var("GONZAI_RANKS").ok();
    for &(s, t) in held {
        let Some(ix) = model.node(s) else { continue };
        let at = Instant::now();
        let found = model.suggest(&mut sc, ix, 50);
        times.push(at.elapsed());
        let own = links.get(s);
        let rank = found
            .iter()
            .map(|x| model.id(x.target))
            .filter(|x| *x != s && !own.is_some_and(|o| o.contains(x)))
            .position(|x| x == t);
        tally.add(rank, !top100.contains(t));
        // For study: the rank among every candidate ranked (-1: not one).
        let deep = if study.is_some() {
            model
                .suggest(&mut sc, ix, 1000)
                .iter()
                .map(|x| model.id(x.target))
                .filter(|x| *x != s && !own.is_some_and(|o| o.contains(x)))
                .position(|x| x == t)
                .map_or(-1, |r| r as i64)
        } else {
            -1
        };
        ranks.push(format!(
            "{s}\t{t}\t{}\t{deep}\n",
            rank.map_or(-1, |r| r as i64)
        ));
    }
    if let Some(path) = study {
        // For study: each held-out pair's rank (-1: not among the 50).
        let _ = std::fs::write(format!("{path}.{what}"), ranks.concat());
    }
    times.sort_unstable();
    let pct = |p: usize| {
        times
            .get(times.len() * p / 100)
            .copied()
            .unwrap_or_default()
    };
    let q = held.len().max(1) as f64;
    println!(
        "{what}, seed {seed}: hits@1 {:.3} hits@10 {:.3} hits@50 {:.3} MRR {:.3} harder hits@10 {:.3} ({}); per ask median {:.2?} p99 {:.2?}",
        tally.h1 as f64 / q,
        tally.h10 as f64 / q,
        tally.h50 as f64 / q,
        tally.mrr / q,
        tally.harder_h10 as f64 / tally.harder.max(1) as f64,
        tally.harder,
        pct(50),
        pct(99),
    );
}

fn split(data: &Dataset, seed: u64, queries: usize) -> Split<'_> {
    // The split.
    let mut deps: HashMap<&str, Vec<&str>> = HashMap::new();
    let mut pairs: HashMap<(&str, &str), usize> = HashMap::new();
    for e in &data.edges {
        if e.edge_type == "depends-on" {
            deps.entry(&e.source).or_default().push(&e.target);
        }
        *pairs.entry((&e.source, &e.target)).or_default() += 1;
    }
    let mut sources: Vec<&str> = deps
        .iter()
        .filter(|(_, v)| v.len() >= 2)
        .map(|(k, _)| *k)
        .collect();
    sources.sort_unstable();
    let mut rng = SplitMix(seed);
    for i in (1..sources.len()).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        sources.swap(i, j);
    }
    let mut held: Vec<(&str, &str)> = Vec::new();
    for &s in &sources {
        if held.len() >= queries {
            break;
        }
        let v = &deps[s];
        let t = v[(rng.next_u64() % v.len() as u64) as usize];
        if pairs[&(s, t)] == 1 {
            held.push((s, t));
        }
    }
    let hidden: HashSet<(&str, &str)> = held.iter().copied().collect();
    let train: Vec<_> = data
        .edges
        .iter()
        .filter(|e| !(e.edge_type == "depends-on" && hidden.contains(&(&*e.source, &*e.target))))
        .cloned()
        .collect();
    let mut indeg: HashMap<&str, usize> = HashMap::new();
    let mut links: HashMap<&str, HashSet<&str>> = HashMap::new();
    let kept = data
        .edges
        .iter()
        .filter(|e| !(e.edge_type == "depends-on" && hidden.contains(&(&*e.source, &*e.target))));
    for e in kept {
        if e.edge_type == "depends-on" {
            *indeg.entry(&e.target).or_default() += 1;
        }
        links.entry(&e.source).or_default().insert(&e.target);
    }
    let mut popular: Vec<(&str, usize)> = indeg.into_iter().collect();
    popular.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let top100: HashSet<&str> = popular.iter().take(100).map(|p| p.0).collect();
    (held, train, top100, links)
}

/// Runs the evaluation and writes the report.
pub async fn run(
    server: &ServerUnderTest,
    dataset: &std::path::Path,
    seed: u64,
    queries: usize,
) -> anyhow::Result<String> {
    let data = Dataset::read(dataset).with_context(|| format!("reading {}", dataset.display()))?;
    let (held, train, top100, links) = split(&data, seed, queries);

    // The import.
    let graph = format!("gonzai-eval-{seed}");
    let started = Instant::now();
    let mut config = ClientConfig::new(format!("ws://{}", server.addr), graph.clone());
    config.user = Some("importer".into());
    let (client, _events) = Client::connect(config).await.context("connecting")?;
    let mut importer = Importer::new(client.clone());
    for n in &data.nodes {
        importer.node(n.clone(), 300).await?;
    }
    for e in &train {
        importer.edge(e.clone(), 100).await?;
    }
    let (nodes, edges) = importer.finish().await?;
    client.close().await;
    let import_time = started.elapsed();
    println!("imported {nodes} nodes, {edges} edges in {import_time:.1?}");

    // The asks.
    let mut conn = Conn::connect(
        server.addr,
        None,
        &format!("/v1/graphs/{graph}?user=evaluator"),
        Codec::Binary,
    )
    .await?;
    let ask = |n: usize, for_node: &str| {
        Envelope::new(
            format!("q{n}"),
            Body::GonzaiSuggestion(GonzaiSuggestion {
                for_node: Some(for_node.to_string()),
                limit: Some(50),
                suggestions: None,
            }),
        )
    };
    let first = Instant::now();
    conn.send(&ask(0, held[0].0)).await?;
    answer(&mut conn, "q0").await?;
    let build_time = first.elapsed();
    let mut tally = Tally::default();
    let mut latencies = Vec::new();
    for (n, &(s, t)) in held.iter().enumerate() {
        let id = format!("q{}", n + 1);
        let at = Instant::now();
        conn.send(&ask(n + 1, s)).await?;
        let suggestions = answer(&mut conn, &id).await?;
        latencies.push(at.elapsed());
        let own = links.get(s);
        let rank = suggestions
            .iter()
            .filter(|x| x.as_str() != s && !own.is_some_and(|o| o.contains(x.as_str())))
            .position(|x| x == t);
        tally.add(rank, !top100.contains(t));
    }
    latencies.sort_unstable();
    let q = held.len() as f64;
    let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p) as usize];
    let mean = latencies.iter().sum::<Duration>() / latencies.len() as u32;
    let machine = Machine::describe();
    let md = format!(
        "# Gonzai link suggestions: evaluation on the Debian graph\n\n\
Made by `gitmind-load suggest --seed {seed} --queries {queries}` (bench crate), through the\n\
protocol: the graph imported into a fresh `gitmind-server` (release build) with the\n\
`gitmind-client` importer, then one `gonzai.suggestion {{for, limit: 50}}` at a time on one\n\
binary-codec connection, the server otherwise idle.\n\n\
Machine: {}.\n\n\
## The split\n\n\
- Dataset: `{}` ({} nodes, {} edges).\n\
- Sources: every node with at least two `depends-on` edges, sorted by id, then shuffled\n  \
(Fisher-Yates from the last index down, `j = next() % (i + 1)`) by splitmix64 seeded with {seed}.\n\
- In that order each source draws one of its `depends-on` targets (in file order) with\n  \
`next() % count`, and the pair is held out when the source has no other edge to that\n  \
target; until {queries} pairs are held ({} held).\n\
- Everything else is imported ({} edges). \"Harder\": the target is not among the 100 most\n  \
depended-on nodes of the imported graph ({} of the queries).\n\
- The rank of the target is read after dropping the source and every node it links to\n  \
(the server already leaves those out).\n\n\
## Figures\n\n\
| hits@1 | hits@10 | hits@50 | MRR | harder hits@10 | target hits@10 | target harder hits@10 |\n\
|---|---|---|---|---|---|---|\n\
| {:.3} | **{:.3}** | {:.3} | {:.3} | **{:.3}** | 0.80 | 0.65 |\n\n\
Latency per ask (send to answer, one at a time): mean {:.2} ms, median {:.2} ms, p90 {:.2} ms,\n\
p99 {:.2} ms, max {:.2} ms. The first ask builds the graph's model from the committed snapshot:\n\
{:.2} s (not in the figures). Import: {:.1} s.\n",
        machine.line(),
        dataset.display(),
        data.nodes.len(),
        data.edges.len(),
        held.len(),
        train.len(),
        tally.harder,
        f64::from(tally.h1 as u32) / q,
        f64::from(tally.h10 as u32) / q,
        f64::from(tally.h50 as u32) / q,
        tally.mrr / q,
        f64::from(tally.harder_h10 as u32) / f64::from(tally.harder.max(1) as u32),
        mean.as_secs_f64() * 1e3,
        pct(0.5).as_secs_f64() * 1e3,
        pct(0.9).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
        latencies[latencies.len() - 1].as_secs_f64() * 1e3,
        build_time.as_secs_f64(),
        import_time.as_secs_f64(),
    );
    conn.send(&Envelope::new(
        "bye",
        Body::SystemHeartbeat(Default::default()),
    ))
    .await
    .ok();
    Ok(md)
}

/// Reads until the answer to `id`: its targets in order.
async fn answer(conn: &mut Conn, id: &str) -> anyhow::Result<Vec<String>> {
    let want = format!("g-{id}");
    loop {
        let Some(batch) = tokio::time::timeout(Duration::from_secs(60), conn.recv()).await?? else {
            anyhow::bail!("the connection closed");
        };
        for e in batch {
            match &e.body {
                Body::GonzaiSuggestion(g) if e.id == want => {
                    return Ok(g
                        .suggestions
                        .iter()
                        .flatten()
                        .map(|s| s.target.clone())
                        .collect());
                }
                Body::SystemError(err) if err.reference.as_deref() == Some(id) => {
                    anyhow::bail!("{id}: {}", err.message)
                }
                _ => {}
            }
        }
    }
}
