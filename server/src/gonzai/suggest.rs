//! Link suggestions: which nodes a node should link to, from the live graph
//! (docs/protocol.md 9, perf-reports/gonzai.md).
//!
//! A question "what should `s` link to?" is answered in three steps:
//!
//! 1. **Candidates and evidence**, gathered in dense per-node accumulators:
//!    - *neighbours*: nodes whose links overlap `s`'s (each shared target
//!      weighted by its rarity, an IDF) vote for their own targets
//!      (collaborative filtering);
//!    - *co-links*: for each target `d` of `s`, the share of `d`'s sources
//!      that also link to `c` (a sample of at most 400 sources);
//!    - *siblings*: nodes whose names share `s`'s stem (`foo`, `foo-data`,
//!      `libfoo-dev`) vote for their targets, and are candidates themselves;
//!    - *text*: nodes whose label and content are most alike (TF-IDF) vote
//!      for their targets;
//!    - *analogies*: what a node of `s`'s stem or release links to,
//!      renamed as `s` is named from it (`libzck-dev` -> `libzstd-dev`
//!      gives `libzck1` -> `libzstd1`);
//!    - two hops: targets of `s`'s targets.
//! 2. **Ranking**: each candidate's evidence becomes a few features (plus
//!    popularity, text cosine, name relations, same section, reverse link)
//!    scored by a logistic model whose weights are fitted from the graph
//!    itself ([`Model::fit`]): one link of each of a sample of nodes is
//!    hidden, the rest ranks candidates, and the weights learn which
//!    evidence finds the hidden link.
//! 3. **Ranking again**: the best [`Ranker::depth`] of the linear ranking
//!    are ordered by gradient-boosted trees ([`super::ranker`]) over the
//!    same features, the linear score and rank, degrees and stem sizes
//!    ([`input_names`]); the trees give the confidence of what they order. Trees weigh one feature by
//!    another, which one linear score cannot.
//!
//! Everything is updated in place as nodes and edges come and go; the
//! weights and the trees are fitted offline, on links hidden from the
//! Debian graph (perf-reports/gonzai.md).

use std::collections::HashMap;
use std::sync::LazyLock;

use super::ranker::Ranker;

/// The trees that order the linear ranking's best candidates again.
static RANKER: LazyLock<Ranker> = LazyLock::new(Ranker::shipped);

/// At most this many sources of a target are read for co-links.
const SAMPLE: usize = 400;
const ITERS: usize = 1000;
/// Targets with more sources than this are not read to explain a suggestion.
const REASON_SCAN: usize = 600;
const LR: f64 = 2.0;
/// This many most similar neighbours vote.
const NEIGHBOURS: usize = 60;
/// This many most similar texts vote.
const TEXT_NEIGHBOURS: usize = 25;
/// At most this many candidates are ranked.
const POOL: usize = 400;
/// Stems of more nodes than this are not mapped through.
const MAP_STEM: usize = 40;
/// Stems of more nodes than this give no analogies.
const ANALOGY_STEM: usize = 400;
/// Nodes with more links than this are not walked through for relevance.
pub const HUB: usize = 500;
/// Terms of the query's text used to find similar texts.
const QUERY_TERMS: usize = 10;
/// Terms in more than this many nodes are not used to find similar texts.
const MAX_POSTING: usize = 3000;

/// The number of features of a candidate (the first is the bias).
pub const FEATURES: usize = 38;

/// Feature names, in order (for reports).
pub const FEATURE_NAMES: [&str; FEATURES] = [
    "bias",
    "neighbours",
    "neighbours/max",
    "co-links",
    "co-links/max",
    "siblings",
    "text-neighbours",
    "text cosine",
    "popularity",
    "same stem",
    "name contains",
    "same section",
    "reverse link",
    "two hops",
    "neighbour rank",
    "co-link rank",
    "co-link cosine",
    "co-sources",
    "same role",
    "name overlap",
    "cosine rank",
    "release siblings",
    "same release",
    "mapped/max",
    "mapped",
    "neighbours × co-links",
    "same stem × same role",
    "co-links × co-link cosine",
    "text-neighbours × text cosine",
    "release siblings × same stem",
    "text of s names c",
    "text of c names s",
    "same upstream version",
    "name prefix",
    "name prefix × same release",
    "name prefix × same upstream",
    "analogies/max",
    "analogies",
];

/// The number of the ranker's inputs of a candidate: the linear score, the
/// source's out-degree, the candidate's in- and out-degree, the features
/// after the bias, then where the candidate stands in the linear ranking
/// and how much evidence the question has ([`Model::ranked`]).
pub const INPUTS: usize = FEATURES + 3 + 6;

/// The ranker's inputs, in order.
pub fn input_names() -> Vec<&'static str> {
    let mut names = vec!["linear score", "out-degree of s", "in-degree", "out-degree"];
    names.extend(&FEATURE_NAMES[1..]);
    names.extend([
        "linear rank",
        "linear score below the best",
        "in-degree of s",
        "stem size of s",
        "stem size",
        "candidates",
    ]);
    names
}

/// A candidate as the linear model ranks it ([`Model::ranked`]).
#[derive(Debug, Clone)]
pub struct Ranked {
    /// The candidate (index).
    pub node: u32,
    /// Its linear score.
    pub score: f64,
    /// The linear model's features, which also explain a suggestion.
    pub features: [f32; FEATURES],
    /// What the trees read.
    pub inputs: [f32; INPUTS],
}

/// One suggestion.
#[derive(Debug, Clone, PartialEq)]
pub struct Suggestion {
    /// The node to link to (index).
    pub target: u32,
    /// The edge type to use (interned).
    pub edge_type: u16,
    /// 0 to 1.
    pub confidence: f64,
    /// Why, for a person.
    pub reason: String,
}

#[derive(Debug, Default, Clone)]
struct NodeData {
    id: String,
    /// Stem of the name (see [`stem`]).
    stem: u32,
    section: u32,
    release: u32,
    /// The upstream part of the release (`1.2` of `1:1.2+dfsg-3`), shared by
    /// a project's source packages.
    upstream: u32,
    /// Sorted term ids with their counts.
    terms: Vec<(u32, f32)>,
    /// Outgoing links: (target, type).
    out: Vec<(u32, u16)>,
    /// Incoming links' sources.
    inc: Vec<u32>,
    /// Incoming links per type, to choose a suggestion's type.
    in_types: Vec<(u16, u32)>,
    alive: bool,
}

/// The model: the graph's structure, names and texts, and the weights.
#[derive(Debug, Clone)]
pub struct Model {
    nodes: Vec<NodeData>,
    index: HashMap<String, u32>,
    free: Vec<u32>,
    alive: usize,
    types: Vec<String>,
    type_ix: HashMap<String, u16>,
    stems: HashMap<String, u32>,
    stem_members: Vec<Vec<u32>>,
    sections: HashMap<String, u32>,
    releases: HashMap<String, u32>,
    release_members: Vec<Vec<u32>>,
    upstreams: HashMap<String, u32>,
    /// Nodes per upstream version.
    upstream_count: Vec<u32>,
    terms: HashMap<String, u32>,
    /// Nodes holding each term.
    postings: Vec<Vec<u32>>,
    /// The name prefixes so common they are namespaces (`python3`, `node`).
    namespaces: std::collections::HashSet<String>,
    /// The name suffixes so common they say what a node is (`dev`, `doc`).
    suffixes: std::collections::HashSet<String>,
    weights: [f64; FEATURES],
    /// Whether the trees order the linear ranking's best again (off only
    /// to measure what they add).
    trees: bool,
}

/// Working memory of one query, kept between queries.
#[derive(Debug, Default)]
pub struct Scratch {
    sim: Vec<f32>,
    acc: Vec<[f32; NACC]>,
    best: Vec<(u32, f32)>,
    touched: Vec<u32>,
    touched_sim: Vec<u32>,
    mark: Vec<u32>,
    epoch: u32,
}

const A_NEIGH: usize = 0;
const A_CO: usize = 1;
const A_SIB: usize = 2;
const A_TEXT: usize = 3;
const A_HOP: usize = 4;
const A_IN: usize = 5;
const A_COS: usize = 6;
const A_PAR: usize = 7;
const A_CR: usize = 8;
const A_REL: usize = 9;
const A_MAP: usize = 10;
const A_ANA: usize = 11;
const NACC: usize = 12;

impl Scratch {
    fn prepare(&mut self, n: usize) {
        if self.sim.len() < n {
            self.sim.resize(n, 0.0);
            self.acc.resize(n, [0.0; NACC]);
            self.best.resize(n, (u32::MAX, 0.0));
            self.mark.resize(n, 0);
        }
        for &i in &self.touched {
            self.acc[i as usize] = [0.0; NACC];
            self.best[i as usize] = (u32::MAX, 0.0);
        }
        for &i in &self.touched_sim {
            self.sim[i as usize] = 0.0;
        }
        self.touched.clear();
        self.touched_sim.clear();
        self.epoch = self.epoch.wrapping_add(1);
        if self.epoch == 0 {
            self.mark.iter_mut().for_each(|m| *m = 0);
            self.epoch = 1;
        }
    }

    fn touch(&mut self, c: u32) -> &mut [f32; NACC] {
        let i = c as usize;
        if self.mark[i] != self.epoch {
            self.mark[i] = self.epoch;
            self.touched.push(c);
        }
        &mut self.acc[i]
    }
}

/// The upstream part of a Debian-style version: without the epoch
/// (`1:`), the revision (`-3`) and repacking or backport marks (`+dfsg`,
/// `~bpo`).
fn upstream(version: &str) -> &str {
    let v = version.split_once(':').map_or(version, |(_, v)| v);
    let v = v.rsplit_once('-').map_or(v, |(v, _)| v);
    v.split(['+', '~']).next().unwrap_or(v)
}

/// How `to` is named from `from`: the part of `from` between the beginning
/// and the end they share, the part of `to` that replaces it, and where it
/// begins (`libzck-dev`, `libzck1`: `-dev`, `1`, 6). `None` when the names
/// share too little to say.
fn rename<'a, 'b>(from: &'a str, to: &'b str) -> Option<(&'a str, &'b str, usize)> {
    let p = from
        .bytes()
        .zip(to.bytes())
        .take_while(|(a, b)| a == b)
        .count();
    let (fr, tr) = (&from.as_bytes()[p..], &to.as_bytes()[p..]);
    let q = fr
        .iter()
        .rev()
        .zip(tr.iter().rev())
        .take_while(|(a, b)| a == b)
        .count();
    if p + q < 3 || !from.is_char_boundary(p) || !to.is_char_boundary(p) {
        return None;
    }
    let (fe, te) = (from.len() - q, to.len() - q);
    if !from.is_char_boundary(fe) || !to.is_char_boundary(te) {
        return None;
    }
    Some((&from[p..fe], &to[p..te], p))
}

/// Splits a node id into the name used for stems: what follows the
/// `prefix:` and lower-cased.
fn name_of(id: &str) -> &str {
    id.split_once(':').map_or(id, |(_, n)| n)
}

/// Tokens of a name: split on `-`, `_`, `.`, `+`.
fn name_tokens(name: &str) -> Vec<&str> {
    name.split(['-', '_', '.', '+'])
        .filter(|t| !t.is_empty())
        .collect()
}

/// The stem of a token: without a leading `lib` and trailing digits.
fn token_stem(t: &str) -> String {
    let t = t.to_ascii_lowercase();
    let t = t.strip_prefix("lib").filter(|r| r.len() >= 2).unwrap_or(&t);
    let s = t.trim_end_matches(|c: char| c.is_ascii_digit());
    if s.len() >= 2 {
        s.to_string()
    } else {
        t.to_string()
    }
}

/// The stem of a name: its first token's stem, or, when the first token is a
/// namespace (`python3`, `node`, `golang`), the first two.
fn stem(name: &str, namespaces: &std::collections::HashSet<String>) -> String {
    let toks = name_tokens(name);
    let Some(first) = toks.first() else {
        return String::new();
    };
    let s = token_stem(first);
    if namespaces.contains(&s) {
        if let Some(second) = toks.get(1) {
            return format!("{s}-{}", token_stem(second));
        }
    }
    s
}

fn tokenize(text: &str, out: &mut Vec<String>) {
    for w in text.split(|c: char| !c.is_alphanumeric()) {
        if w.len() >= 2 && w.len() <= 30 {
            out.push(w.to_lowercase());
        }
    }
}

impl Default for Model {
    fn default() -> Self {
        Self::new()
    }
}

/// A node as the model reads it.
#[derive(Debug, Clone, Copy)]
pub struct NodeText<'a> {
    /// The node's id.
    pub id: &'a str,
    /// Its label.
    pub label: &'a str,
    /// Its content.
    pub content: &'a str,
    /// Its `section` (or kind): nodes in the same one are more alike.
    pub section: &'a str,
    /// Its release (`version`): nodes sharing an uncommon one were made
    /// together (one Debian source package).
    pub release: &'a str,
}

impl Model {
    /// An empty model with default weights.
    pub fn new() -> Self {
        Model {
            nodes: Vec::new(),
            index: HashMap::new(),
            free: Vec::new(),
            alive: 0,
            types: Vec::new(),
            type_ix: HashMap::new(),
            stems: HashMap::new(),
            stem_members: Vec::new(),
            sections: HashMap::new(),
            releases: HashMap::new(),
            release_members: Vec::new(),
            upstreams: HashMap::new(),
            upstream_count: Vec::new(),
            terms: HashMap::new(),
            postings: Vec::new(),
            namespaces: Default::default(),
            suffixes: Default::default(),
            weights: DEFAULT_WEIGHTS,
            trees: true,
        }
    }

    /// A model of these nodes and edges `(source, type, target)`, its
    /// namespaces found from the names, its weights fitted when
    /// `fit_sample` is not 0.
    pub fn build<'a>(
        nodes: impl IntoIterator<Item = NodeText<'a>>,
        edges: impl IntoIterator<Item = (&'a str, &'a str, &'a str)>,
        fit_sample: usize,
        seed: u64,
    ) -> Self {
        let nodes: Vec<NodeText<'a>> = nodes.into_iter().collect();
        let mut m = Model::new();
        let mut firsts: HashMap<String, usize> = HashMap::new();
        let mut lasts: HashMap<String, usize> = HashMap::new();
        for n in &nodes {
            let toks = name_tokens(name_of(n.id));
            if let Some(f) = toks.first() {
                *firsts.entry(token_stem(f)).or_default() += 1;
            }
            if toks.len() > 1 {
                if let Some(l) = toks.last() {
                    *lasts.entry(l.to_string()).or_default() += 1;
                }
            }
        }
        let cut = (nodes.len() / 300).max(50);
        m.namespaces = firsts
            .into_iter()
            .filter(|(_, c)| *c > cut)
            .map(|(s, _)| s)
            .collect();
        m.suffixes = lasts
            .into_iter()
            .filter(|(_, c)| *c > cut)
            .map(|(s, _)| s)
            .collect();
        for n in &nodes {
            m.add_node(*n);
        }
        for (s, t, d) in edges {
            m.add_edge(s, t, d);
        }
        if fit_sample > 0 {
            m.fit(fit_sample, seed);
        }
        m
    }

    /// The number of nodes.
    pub fn len(&self) -> usize {
        self.alive
    }

    /// Whether there is no node.
    pub fn is_empty(&self) -> bool {
        self.alive == 0
    }

    /// The index of a node.
    pub fn node(&self, id: &str) -> Option<u32> {
        self.index.get(id).copied()
    }

    /// The id of a node.
    pub fn id(&self, ix: u32) -> &str {
        &self.nodes[ix as usize].id
    }

    /// An edge type's name.
    pub fn type_name(&self, t: u16) -> &str {
        self.types
            .get(t as usize)
            .map_or("relates-to", String::as_str)
    }

    /// Turns the trees on or off (to measure what they add).
    pub fn use_trees(&mut self, on: bool) {
        self.trees = on;
    }

    /// The fitted weights.
    pub fn weights(&self) -> &[f64; FEATURES] {
        &self.weights
    }

    /// Whether `s` links to `t` (any type).
    pub fn links(&self, s: u32, t: u32) -> bool {
        self.nodes[s as usize].out.iter().any(|&(x, _)| x == t)
    }

    /// The targets of a node.
    pub fn targets(&self, s: u32) -> impl Iterator<Item = u32> + '_ {
        self.nodes[s as usize].out.iter().map(|&(t, _)| t)
    }

    /// The nodes linking to a node.
    pub fn sources(&self, s: u32) -> &[u32] {
        &self.nodes[s as usize].inc
    }

    fn intern_type(&mut self, t: &str) -> u16 {
        if let Some(&i) = self.type_ix.get(t) {
            return i;
        }
        let i = self.types.len() as u16;
        self.types.push(t.to_string());
        self.type_ix.insert(t.to_string(), i);
        i
    }

    /// Adds a node, or replaces its text.
    pub fn add_node(&mut self, n: NodeText<'_>) -> u32 {
        let ix = match self.index.get(n.id) {
            Some(&ix) => {
                self.clear_text(ix);
                ix
            }
            None => {
                let ix = self.free.pop().unwrap_or_else(|| {
                    self.nodes.push(NodeData::default());
                    (self.nodes.len() - 1) as u32
                });
                self.index.insert(n.id.to_string(), ix);
                let stem_s = stem(name_of(n.id), &self.namespaces);
                let next = self.stems.len() as u32;
                let st = *self.stems.entry(stem_s).or_insert(next);
                if st as usize == self.stem_members.len() {
                    self.stem_members.push(Vec::new());
                }
                self.stem_members[st as usize].push(ix);
                let d = &mut self.nodes[ix as usize];
                *d = NodeData {
                    id: n.id.to_string(),
                    stem: st,
                    alive: true,
                    ..NodeData::default()
                };
                self.alive += 1;
                ix
            }
        };
        let next = self.sections.len() as u32;
        let sec = *self.sections.entry(n.section.to_string()).or_insert(next);
        self.leave_release(ix);
        let next = self.releases.len() as u32;
        let rel = *self.releases.entry(n.release.to_string()).or_insert(next);
        if rel as usize == self.release_members.len() {
            self.release_members.push(Vec::new());
        }
        self.release_members[rel as usize].push(ix);
        self.nodes[ix as usize].release = rel;
        let next = self.upstreams.len() as u32;
        let up = *self
            .upstreams
            .entry(upstream(n.release).to_string())
            .or_insert(next);
        if up as usize == self.upstream_count.len() {
            self.upstream_count.push(0);
        }
        self.upstream_count[up as usize] += 1;
        self.nodes[ix as usize].upstream = up;
        let mut words = Vec::new();
        tokenize(n.label, &mut words);
        tokenize(n.content, &mut words);
        for t in name_tokens(name_of(n.id)) {
            words.push(t.to_ascii_lowercase());
        }
        let mut counts: HashMap<u32, f32> = HashMap::new();
        for w in words {
            let next = self.terms.len() as u32;
            let t = *self.terms.entry(w).or_insert(next);
            if t as usize == self.postings.len() {
                self.postings.push(Vec::new());
            }
            *counts.entry(t).or_default() += 1.0;
        }
        let mut terms: Vec<(u32, f32)> = counts.into_iter().collect();
        terms.sort_unstable_by_key(|&(t, _)| t);
        for &(t, _) in &terms {
            self.postings[t as usize].push(ix);
        }
        let d = &mut self.nodes[ix as usize];
        d.section = sec;
        d.terms = terms;
        ix
    }

    fn leave_release(&mut self, ix: u32) {
        let d = &self.nodes[ix as usize];
        if let Some(c) = self.upstream_count.get_mut(d.upstream as usize) {
            *c = c.saturating_sub(1);
        }
        if let Some(m) = self.release_members.get_mut(d.release as usize) {
            if let Some(i) = m.iter().position(|&x| x == ix) {
                m.swap_remove(i);
            }
        }
    }

    fn clear_text(&mut self, ix: u32) {
        let terms = std::mem::take(&mut self.nodes[ix as usize].terms);
        for (t, _) in terms {
            let p = &mut self.postings[t as usize];
            if let Some(i) = p.iter().position(|&x| x == ix) {
                p.swap_remove(i);
            }
        }
    }

    /// Removes a node and its links.
    pub fn remove_node(&mut self, id: &str) {
        let Some(ix) = self.index.remove(id) else {
            return;
        };
        self.clear_text(ix);
        self.leave_release(ix);
        let out: Vec<(u32, u16)> = self.nodes[ix as usize].out.clone();
        for (t, ty) in out {
            self.unlink(ix, ty, t);
        }
        let inc: Vec<u32> = self.nodes[ix as usize].inc.clone();
        for s in inc {
            let tys: Vec<u16> = self.nodes[s as usize]
                .out
                .iter()
                .filter(|&&(t, _)| t == ix)
                .map(|&(_, ty)| ty)
                .collect();
            for ty in tys {
                self.unlink(s, ty, ix);
            }
        }
        let st = self.nodes[ix as usize].stem as usize;
        if let Some(i) = self.stem_members[st].iter().position(|&x| x == ix) {
            self.stem_members[st].swap_remove(i);
        }
        self.nodes[ix as usize] = NodeData::default();
        self.free.push(ix);
        self.alive -= 1;
    }

    /// Adds an edge; its ends are added as bare nodes when unknown.
    pub fn add_edge(&mut self, source: &str, edge_type: &str, target: &str) {
        let s = self.ensure(source);
        let t = self.ensure(target);
        if s == t {
            return;
        }
        let ty = self.intern_type(edge_type);
        if self.nodes[s as usize].out.contains(&(t, ty)) {
            return;
        }
        self.nodes[s as usize].out.push((t, ty));
        let d = &mut self.nodes[t as usize];
        if !d.inc.contains(&s) {
            d.inc.push(s);
        }
        match d.in_types.iter_mut().find(|(x, _)| *x == ty) {
            Some((_, c)) => *c += 1,
            None => d.in_types.push((ty, 1)),
        }
    }

    /// Removes an edge.
    pub fn remove_edge(&mut self, source: &str, edge_type: &str, target: &str) {
        let (Some(s), Some(t), Some(&ty)) = (
            self.node(source),
            self.node(target),
            self.type_ix.get(edge_type),
        ) else {
            return;
        };
        self.unlink(s, ty, t);
    }

    fn unlink(&mut self, s: u32, ty: u16, t: u32) {
        let out = &mut self.nodes[s as usize].out;
        let Some(i) = out.iter().position(|&x| x == (t, ty)) else {
            return;
        };
        out.swap_remove(i);
        let still = out.iter().any(|&(x, _)| x == t);
        let d = &mut self.nodes[t as usize];
        if !still {
            if let Some(i) = d.inc.iter().position(|&x| x == s) {
                d.inc.swap_remove(i);
            }
        }
        if let Some(e) = d.in_types.iter_mut().find(|(x, _)| *x == ty) {
            e.1 = e.1.saturating_sub(1);
        }
    }

    fn ensure(&mut self, id: &str) -> u32 {
        match self.node(id) {
            Some(ix) => ix,
            None => self.add_node(NodeText {
                id,
                label: "",
                content: "",
                section: "",
                release: "",
            }),
        }
    }

    fn idf_in(&self, d: u32) -> f32 {
        let k = self.nodes[d as usize].inc.len().max(1) as f32;
        ((self.alive.max(2) as f32) / k).ln().max(0.1)
    }

    fn term_idf(&self, t: u32) -> f32 {
        let k = self.postings[t as usize].len().max(1) as f32;
        ((self.alive.max(2) as f32) / k).ln().max(0.0)
    }

    fn text_norm(&self, ix: u32) -> f32 {
        let mut s = 0.0;
        for &(t, c) in &self.nodes[ix as usize].terms {
            let w = (1.0 + c.ln()) * self.term_idf(t);
            s += w * w;
        }
        s.sqrt().max(1e-6)
    }

    fn cosine(&self, a: u32, b: u32, norm_a: f32) -> f32 {
        let (x, y) = (&self.nodes[a as usize].terms, &self.nodes[b as usize].terms);
        let (mut i, mut j, mut dot) = (0, 0, 0.0);
        while i < x.len() && j < y.len() {
            match x[i].0.cmp(&y[j].0) {
                std::cmp::Ordering::Less => i += 1,
                std::cmp::Ordering::Greater => j += 1,
                std::cmp::Ordering::Equal => {
                    let idf = self.term_idf(x[i].0);
                    dot += (1.0 + x[i].1.ln()) * (1.0 + y[j].1.ln()) * idf * idf;
                    i += 1;
                    j += 1;
                }
            }
        }
        dot / (norm_a * self.text_norm(b))
    }

    /// Ranks candidates for `s`: `(candidate, features)`, unsorted, at most
    /// [`POOL`]. `hide` is a link of `s` to act as if absent (for fitting).
    fn candidates(
        &self,
        sc: &mut Scratch,
        s: u32,
        hide: Option<u32>,
    ) -> Vec<(u32, [f32; FEATURES])> {
        sc.prepare(self.nodes.len());
        let sd = &self.nodes[s as usize];
        let outs: Vec<u32> = sd
            .out
            .iter()
            .map(|&(t, _)| t)
            .filter(|&t| Some(t) != hide)
            .collect();
        // Neighbours: nodes sharing targets with s, each shared target
        // weighted by its IDF.
        for &d in &outs {
            let w = self.idf_in(d);
            for &u in &self.nodes[d as usize].inc {
                if u == s {
                    continue;
                }
                if sc.sim[u as usize] == 0.0 {
                    sc.touched_sim.push(u);
                }
                sc.sim[u as usize] += w;
            }
        }
        let mut neigh: Vec<(u32, f32)> = sc
            .touched_sim
            .iter()
            .map(|&u| {
                let deg = self.nodes[u as usize].out.len().max(1) as f32;
                (u, sc.sim[u as usize] / deg.sqrt())
            })
            .collect();
        let k = NEIGHBOURS.min(neigh.len());
        if k > 0 && neigh.len() > k {
            neigh.select_nth_unstable_by(k - 1, |a, b| b.1.total_cmp(&a.1));
            neigh.truncate(k);
        }
        for &(u, w) in &neigh {
            for &(c, _) in &self.nodes[u as usize].out {
                sc.touch(c)[A_NEIGH] += w;
            }
        }
        // Co-links: P(c | d) over a sample of d's sources, weighted by IDF.
        for &d in &outs {
            let inc = &self.nodes[d as usize].inc;
            let n = inc.len();
            if n <= 1 {
                continue;
            }
            let step = n.div_ceil(SAMPLE);
            let taken = n.div_ceil(step) as f32;
            let w = self.idf_in(d) / taken;
            let wc = n as f32 / taken / (n as f32).sqrt();
            let mut i = 0;
            while i < n {
                let u = inc[i];
                i += step;
                if u == s {
                    continue;
                }
                for &(c, _) in &self.nodes[u as usize].out {
                    let a = sc.touch(c);
                    a[A_CO] += w;
                    a[A_COS] += wc;
                }
            }
        }
        // The best explanation of each candidate's co-links: the target d of
        // s whose sources most often also link to it (computed below for the
        // pool only).
        // Siblings: nodes with s's stem.
        let sibs = &self.stem_members[sd.stem as usize];
        if sibs.len() > 1 && sibs.len() <= 400 {
            let w = 1.0 / (sibs.len() - 1) as f32;
            for &u in sibs {
                if u == s {
                    continue;
                }
                sc.touch(u)[A_SIB] += 0.5;
                for &(c, _) in &self.nodes[u as usize].out {
                    sc.touch(c)[A_SIB] += w;
                }
            }
        }
        // Release siblings: nodes made together with s.
        let rels = &self.release_members[sd.release as usize];
        if rels.len() > 1 && rels.len() <= 100 && !self.nodes[s as usize].id.is_empty() {
            let w = 1.0 / (rels.len() - 1) as f32;
            for &u in rels {
                if u == s {
                    continue;
                }
                let same = f32::from(self.nodes[u as usize].stem == sd.stem) + 0.2;
                sc.touch(u)[A_REL] += 0.5 * same;
                for &(c, _) in &self.nodes[u as usize].out {
                    sc.touch(c)[A_REL] += w * same;
                }
            }
        }
        // Mapped: what s's library links to, as the nodes of s's role
        // (`libfoo-dev` -> `libfoo1` -> `libbar1` gives `libbar-dev`):
        // the targets of s and of its same-stem nodes, each taken to the
        // nodes of its own stem whose last name token is s's.
        let s_name = name_of(&sd.id);
        let s_role = self.role(s_name);
        let s_last = name_tokens(s_name).last().map(|t| t.to_string());
        if let Some(last) = s_last.as_deref().filter(|_| s_role.contains('|')) {
            if sibs.len() <= MAP_STEM {
                for &u in sibs.iter().chain(std::iter::once(&s)) {
                    if u == s && sibs.contains(&s) {
                        continue;
                    }
                    for &(x, _) in &self.nodes[u as usize].out {
                        let xs = self.nodes[x as usize].stem;
                        if xs == sd.stem {
                            continue;
                        }
                        let members = &self.stem_members[xs as usize];
                        if members.len() > MAP_STEM {
                            continue;
                        }
                        for &c in members {
                            if c == x || c == s {
                                continue;
                            }
                            let c_name = name_of(&self.nodes[c as usize].id);
                            if name_tokens(c_name).last() == Some(&last) {
                                sc.touch(c)[A_MAP] += 1.0;
                            }
                        }
                    }
                }
            }
        }
        // Analogies: what a node named like s (same stem or release)
        // links to, renamed as s is named from it: `libzck-dev` ->
        // `libzstd-dev` gives `libzck1` -> `libzstd1`, `php-soap` ->
        // `php8.2-soap` gives `php-odbc` -> `php8.2-odbc`.
        if !s_name.is_empty() {
            let mut like: Vec<u32> = Vec::new();
            if sibs.len() <= ANALOGY_STEM {
                like.extend(sibs.iter().copied().filter(|&u| u != s));
            }
            if rels.len() <= 100 && !sd.id.is_empty() {
                like.extend(rels.iter().copied().filter(|&u| u != s));
            }
            like.sort_unstable();
            like.dedup();
            self.analogies(sc, s, like);
        }
        // Text neighbours.
        let norm_s = self.text_norm(s);
        let mut qterms: Vec<(u32, f32)> = sd
            .terms
            .iter()
            .filter(|&&(t, _)| {
                let p = self.postings[t as usize].len();
                p > 1 && p <= MAX_POSTING
            })
            .map(|&(t, c)| (t, (1.0 + c.ln()) * self.term_idf(t)))
            .collect();
        qterms.sort_unstable_by(|a, b| b.1.total_cmp(&a.1));
        qterms.truncate(QUERY_TERMS);
        let mut tsim: HashMap<u32, f32> = HashMap::new();
        for &(t, w) in &qterms {
            let idf = self.term_idf(t);
            for &u in &self.postings[t as usize] {
                if u != s {
                    *tsim.entry(u).or_default() += w * idf;
                }
            }
        }
        let mut tn: Vec<(u32, f32)> = tsim.into_iter().collect();
        let k = TEXT_NEIGHBOURS.min(tn.len());
        if k > 0 && tn.len() > k {
            tn.select_nth_unstable_by(k - 1, |a, b| b.1.total_cmp(&a.1));
            tn.truncate(k);
        }
        for &(u, _) in &tn {
            let cs = self.cosine(s, u, norm_s);
            sc.touch(u)[A_TEXT] += cs * 0.5;
            for &(c, _) in &self.nodes[u as usize].out {
                sc.touch(c)[A_TEXT] += cs;
            }
        }
        // Co-sources: what the nodes linking to s also link to.
        {
            let inc = &sd.inc;
            let n = inc.len();
            if n > 0 {
                let step = n.div_ceil(SAMPLE);
                let taken = n.div_ceil(step) as f32;
                let mut i = 0;
                while i < n {
                    let u = inc[i];
                    i += step;
                    for &(c, _) in &self.nodes[u as usize].out {
                        sc.touch(c)[A_PAR] += 1.0 / taken;
                    }
                }
            }
        }
        // Two hops.
        for &d in &outs {
            for &(c, _) in &self.nodes[d as usize].out {
                sc.touch(c)[A_HOP] += 1.0;
            }
        }
        // Candidates: drop s, its targets; keep the best by a quick prior.
        for &c in &sc.touched {
            let n = self.nodes[c as usize].inc.len().max(1) as f32;
            sc.acc[c as usize][A_COS] /= n.sqrt();
        }
        let mut maxes = [1e-6f32; NACC];
        for &c in &sc.touched {
            let a = &sc.acc[c as usize];
            for k in 0..NACC {
                maxes[k] = maxes[k].max(a[k]);
            }
        }
        let mut pool: Vec<(u32, f32)> = Vec::new();
        for &c in &sc.touched {
            if c == s || !self.nodes[c as usize].alive {
                continue;
            }
            if outs.contains(&c) {
                continue;
            }
            let a = &sc.acc[c as usize];
            let prior = a[A_NEIGH] / maxes[A_NEIGH]
                + a[A_CO] / maxes[A_CO]
                + a[A_SIB] / maxes[A_SIB]
                + a[A_TEXT] / maxes[A_TEXT]
                + 0.3 * a[A_HOP] / maxes[A_HOP]
                + a[A_COS] / maxes[A_COS]
                + 0.5 * a[A_PAR] / maxes[A_PAR]
                + a[A_REL] / maxes[A_REL]
                + a[A_MAP] / maxes[A_MAP]
                + a[A_ANA] / maxes[A_ANA];
            pool.push((c, prior));
        }
        if pool.len() > POOL {
            pool.select_nth_unstable_by(POOL - 1, |a, b| b.1.total_cmp(&a.1));
            pool.truncate(POOL);
        }
        // Ranks within the pool by neighbours and co-links.
        let mut by_n: Vec<(u32, f32)> = pool
            .iter()
            .map(|&(c, _)| (c, sc.acc[c as usize][A_NEIGH]))
            .collect();
        by_n.sort_unstable_by(|a, b| b.1.total_cmp(&a.1));
        for (r, &(c, _)) in by_n.iter().enumerate() {
            sc.acc[c as usize][A_IN] = r as f32;
        }
        let mut by_c: Vec<(u32, f32)> = pool
            .iter()
            .map(|&(c, _)| (c, sc.acc[c as usize][A_CO]))
            .collect();
        by_c.sort_unstable_by(|a, b| b.1.total_cmp(&a.1));
        let mut co_rank: HashMap<u32, f32> = HashMap::with_capacity(by_c.len());
        for (r, &(c, _)) in by_c.iter().enumerate() {
            co_rank.insert(c, r as f32);
        }
        let mut by_cr: Vec<(u32, f32)> = pool
            .iter()
            .map(|&(c, _)| (c, sc.acc[c as usize][A_COS]))
            .collect();
        by_cr.sort_unstable_by(|a, b| b.1.total_cmp(&a.1));
        for (r, &(c, _)) in by_cr.iter().enumerate() {
            sc.acc[c as usize][A_CR] = r as f32;
        }
        let s_toks = name_tokens(s_name);
        let n_outs = outs.len().max(1) as f32;
        let n_alive = self.alive.max(2) as f32;
        pool.iter()
            .map(|&(c, _)| {
                let a = sc.acc[c as usize];
                let cd = &self.nodes[c as usize];
                let c_name = name_of(&cd.id);
                let contains = !c_name.is_empty()
                    && !s_name.is_empty()
                    && (s_name.contains(c_name) || c_name.contains(s_name));
                let mut f = [0f32; FEATURES];
                f[0] = 1.0;
                f[1] = (1.0 + a[A_NEIGH]).ln();
                f[2] = a[A_NEIGH] / maxes[A_NEIGH];
                f[3] = (1.0 + a[A_CO]).ln();
                f[4] = a[A_CO] / maxes[A_CO];
                f[5] = a[A_SIB].min(2.0);
                f[6] = a[A_TEXT] / maxes[A_TEXT];
                f[7] = if a[A_TEXT] > 0.0 || a[A_SIB] > 0.0 || contains {
                    self.cosine(s, c, norm_s)
                } else {
                    0.0
                };
                let pop = cd.inc.len() - usize::from(Some(c) == hide);
                f[8] = (1.0 + pop as f32).ln() / n_alive.ln();
                f[9] = f32::from(cd.stem == sd.stem);
                f[10] = f32::from(contains);
                f[11] = f32::from(cd.section == sd.section);
                f[12] = f32::from(cd.out.iter().any(|&(x, _)| x == s));
                f[13] = a[A_HOP] / n_outs;
                f[14] = 1.0 / (1.0 + a[A_IN]);
                f[15] = 1.0 / (1.0 + co_rank[&c]);
                f[16] = a[A_COS] / maxes[A_COS];
                f[17] = a[A_PAR] / maxes[A_PAR];
                f[18] = f32::from(!s_role.is_empty() && self.role(c_name) == s_role);
                let c_toks = name_tokens(c_name);
                let shared = c_toks.iter().filter(|t| s_toks.contains(t)).count();
                f[19] = shared as f32 / (s_toks.len() + c_toks.len() - shared).max(1) as f32;
                f[20] = 1.0 / (1.0 + a[A_CR]);
                f[21] = a[A_REL] / maxes[A_REL];
                f[22] = f32::from(cd.release == sd.release && rels.len() <= 100);
                f[23] = a[A_MAP] / maxes[A_MAP];
                f[24] = (1.0 + a[A_MAP]).ln();
                f[25] = f[2] * f[4];
                f[26] = f[9] * f[18];
                f[27] = f[4] * f[16];
                f[28] = f[6] * f[7];
                f[29] = f[21] * f[9];
                if cd.stem != sd.stem {
                    f[30] = f32::from(self.names(s, c));
                    f[31] = f32::from(self.names(c, s));
                }
                f[32] = f32::from(
                    cd.upstream == sd.upstream
                        && cd.release != sd.release
                        && self.upstream_count[sd.upstream as usize] <= 200
                        && !self.nodes[s as usize].id.is_empty(),
                );
                // How much of the shorter name the two begin with:
                // `libfoo-dev` and `libfoo7`, `python3-x` and `python3-x-lib`.
                let lcp = s_name
                    .bytes()
                    .zip(c_name.bytes())
                    .take_while(|(a, b)| a == b)
                    .count();
                f[33] = lcp as f32 / s_name.len().min(c_name.len()).max(1) as f32;
                f[34] = f[33] * f[22];
                f[35] = f[33] * f[32];
                f[36] = a[A_ANA] / maxes[A_ANA];
                f[37] = (1.0 + a[A_ANA]).ln();
                (c, f)
            })
            .collect()
    }

    /// Adds to each candidate the analogies of `like` (nodes
    /// named like `s`): what each links to, renamed as `s` is named from it,
    /// when a node of that name exists.
    fn analogies(&self, sc: &mut Scratch, s: u32, like: Vec<u32>) {
        let s_name = name_of(&self.nodes[s as usize].id);
        let mut renamed = String::new();
        for u in like {
            let ud = &self.nodes[u as usize];
            let Some((umid, smid, p)) = rename(name_of(&ud.id), s_name) else {
                continue;
            };
            let w = 1.0 - (umid.len() + smid.len()) as f32 / (2 * s_name.len()) as f32;
            for &(x, _) in &ud.out {
                let xid = &self.nodes[x as usize].id;
                let xn = name_of(xid);
                let at = if umid.is_empty() {
                    // An insertion: where it is in s, after the same
                    // beginning.
                    let un = name_of(&ud.id);
                    match xn.get(..p) {
                        Some(b) if p > 0 && un.get(..p) == Some(b) => p,
                        _ => continue,
                    }
                } else {
                    match xn.find(umid) {
                        Some(i) => i,
                        None => continue,
                    }
                };
                renamed.clear();
                renamed.push_str(&xid[..xid.len() - xn.len()]);
                renamed.push_str(&xn[..at]);
                renamed.push_str(smid);
                renamed.push_str(&xn[at + umid.len()..]);
                if let Some(&c) = self.index.get(renamed.as_str()) {
                    if c != s && c != x {
                        sc.touch(c)[A_ANA] += w.max(0.1);
                    }
                }
            }
        }
    }

    fn score(&self, f: &[f32; FEATURES]) -> f64 {
        self.weights
            .iter()
            .zip(f)
            .map(|(w, x)| w * f64::from(*x))
            .sum()
    }

    /// Up to `limit` suggestions for `s`, by confidence (highest first),
    /// never `s` or a node it links to.
    pub fn suggest(&self, sc: &mut Scratch, s: u32, limit: usize) -> Vec<Suggestion> {
        self.suggest_hiding(sc, s, limit, None)
    }

    fn suggest_hiding(
        &self,
        sc: &mut Scratch,
        s: u32,
        limit: usize,
        hide: Option<u32>,
    ) -> Vec<Suggestion> {
        if !self.nodes.get(s as usize).is_some_and(|d| d.alive) || limit == 0 {
            return Vec::new();
        }
        let mut ranked = self.ranked(sc, s, hide);
        let ranker = &*RANKER;
        // The best of the linear ranking ordered again by the trees; the
        // rest keep their order, never above the trees' last.
        let depth = if self.trees {
            ranker.depth.min(ranked.len())
        } else {
            0
        };
        let top: Vec<Ranked> = ranked.drain(..depth).collect();
        let inputs: Vec<[f32; INPUTS]> = top.iter().map(|r| r.inputs).collect();
        let mut scores = Vec::new();
        ranker.score_all(&inputs, &mut scores);
        // Ties (trees often give equal sums) go to the better linear score.
        let mut order: Vec<(usize, f64)> = scores.into_iter().enumerate().collect();
        order.sort_by(|a, b| b.1.total_cmp(&a.1));
        let mut out: Vec<(&Ranked, f64)> = order
            .into_iter()
            .map(|(i, g)| (&top[i], ranker.confidence(g)))
            .collect();
        let floor = out.last().map_or(1.0, |x| x.1);
        out.extend(
            ranked
                .iter()
                .map(|r| (r, (1.0 / (1.0 + (-r.score).exp())).min(floor))),
        );
        out.truncate(limit);
        out.into_iter()
            .map(|(r, confidence)| Suggestion {
                target: r.node,
                edge_type: self.type_for(r.node),
                confidence,
                reason: self.reason(s, r.node, &r.features, hide),
            })
            .collect()
    }

    /// Every candidate for `s` (`hide` hidden) by its linear score, best
    /// first.
    pub fn ranked(&self, sc: &mut Scratch, s: u32, hide: Option<u32>) -> Vec<Ranked> {
        let sd = &self.nodes[s as usize];
        let s_out = sd.out.len() - usize::from(hide.is_some());
        let mut ranked: Vec<Ranked> = self
            .candidates(sc, s, hide)
            .into_iter()
            .map(|(node, features)| {
                let score = self.score(&features);
                let cd = &self.nodes[node as usize];
                let mut x = [0f32; INPUTS];
                x[0] = score as f32;
                x[1] = s_out as f32;
                x[2] = (cd.inc.len() - usize::from(Some(node) == hide)) as f32;
                x[3] = cd.out.len() as f32;
                x[4..FEATURES + 3].copy_from_slice(&features[1..]);
                x[FEATURES + 5] = sd.inc.len() as f32;
                x[FEATURES + 6] = self.stem_members[sd.stem as usize].len() as f32;
                x[FEATURES + 7] = self.stem_members[cd.stem as usize].len() as f32;
                Ranked {
                    node,
                    score,
                    features,
                    inputs: x,
                }
            })
            .collect();
        ranked.sort_unstable_by(|a, b| b.score.total_cmp(&a.score).then(a.node.cmp(&b.node)));
        let best = ranked.first().map_or(0.0, |r| r.score);
        let count = ranked.len() as f32;
        for (i, r) in ranked.iter_mut().enumerate() {
            r.inputs[FEATURES + 3] = i as f32;
            r.inputs[FEATURES + 4] = (best - r.score) as f32;
            r.inputs[FEATURES + 8] = count;
        }
        ranked
    }

    fn type_for(&self, c: u32) -> u16 {
        self.nodes[c as usize]
            .in_types
            .iter()
            .max_by_key(|&&(_, n)| n)
            .map_or(0, |&(t, _)| t)
    }

    /// A sentence saying why `c` is suggested for `s`.
    fn reason(&self, s: u32, c: u32, f: &[f32; FEATURES], hide: Option<u32>) -> String {
        let c_id = &self.nodes[c as usize].id;
        // The target d of s whose sources most often also link to c.
        let mut best: Option<(u32, usize, usize)> = None;
        for &(d, _) in &self.nodes[s as usize].out {
            if Some(d) == hide {
                continue;
            }
            let inc = &self.nodes[d as usize].inc;
            if inc.len() > REASON_SCAN {
                continue;
            }
            let both = inc.iter().filter(|&&u| u != s && self.links(u, c)).count();
            if both > 0
                && best.is_none_or(|(_, b, n)| {
                    both * n.max(1) > b * inc.len().max(1) || (both == b && inc.len() < n)
                })
            {
                best = Some((d, both, inc.len()));
            }
        }
        if f[9] > 0.0 || f[10] > 0.0 {
            return format!(
                "{} and {} look like parts of the same thing (their names share {})",
                self.nodes[s as usize].id,
                c_id,
                self.stem_name(s)
            );
        }
        if let Some((d, both, n)) = best {
            if both >= 2 {
                return format!(
                    "{both} of the {n} nodes that link to {} also link to {c_id}",
                    self.nodes[d as usize].id
                );
            }
        }
        if f[7] > 0.3 {
            return format!(
                "{c_id} is described much like {}",
                self.nodes[s as usize].id
            );
        }
        format!(
            "nodes that link to what {} links to often link to {c_id}",
            self.nodes[s as usize].id
        )
    }

    /// Whether the text of `a` holds the last word of `b`'s stem (of three
    /// letters or more): `python3-foo` "bindings for the bar library".
    fn names(&self, a: u32, b: u32) -> bool {
        let word = self.stem_word(b);
        if word.len() < 3 {
            return false;
        }
        let Some(&t) = self.terms.get(word) else {
            return false;
        };
        self.nodes[a as usize]
            .terms
            .binary_search_by_key(&t, |&(x, _)| x)
            .is_ok()
    }

    /// The last word of a node's stem.
    fn stem_word(&self, ix: u32) -> &str {
        let name = name_of(&self.nodes[ix as usize].id);
        let toks = name_tokens(name);
        // The stem's last token is the first or second name token.
        let first_is_namespace = toks
            .first()
            .is_some_and(|f| self.namespaces.contains(&token_stem(f)));
        let tok = if first_is_namespace {
            toks.get(1)
        } else {
            toks.first()
        };
        tok.map_or("", |t| {
            let t = t.strip_prefix("lib").filter(|r| r.len() >= 2).unwrap_or(t);
            t.trim_end_matches(|c: char| c.is_ascii_digit())
        })
    }

    /// The role a name plays: its namespace (`python3`) and its suffix
    /// when it is a common one (`dev`, `doc`, `perl`).
    fn role(&self, name: &str) -> String {
        let toks = name_tokens(name);
        let mut r = String::new();
        if let Some(f) = toks.first() {
            let s = token_stem(f);
            if self.namespaces.contains(&s) {
                r.push_str(&s);
            }
        }
        if toks.len() > 1 {
            if let Some(l) = toks.last() {
                if self.suffixes.contains(*l) {
                    r.push('|');
                    r.push_str(l);
                }
            }
        }
        r
    }

    fn stem_name(&self, s: u32) -> String {
        let st = self.nodes[s as usize].stem;
        self.stems
            .iter()
            .find(|(_, &v)| v == st)
            .map_or_else(String::new, |(k, _)| format!("\"{k}\""))
    }

    /// Up to `sample` links `(s, t)` to hide, drawn at random (`seed`) among
    /// the links of nodes with at least two (of `edge_type`, when given:
    /// the kind of link to learn to suggest), each the only link of `s` to
    /// `t`: what [`Model::fit`] and [`Model::hidden_hits10`] hide.
    pub fn hidden_links(
        &self,
        sample: usize,
        seed: u64,
        edge_type: Option<&str>,
    ) -> Vec<(u32, u32)> {
        let ty = match edge_type {
            Some(name) => match self.type_ix.get(name) {
                Some(&t) => Some(t),
                None => return Vec::new(),
            },
            None => None,
        };
        let of_type = |s: u32| -> Vec<u32> {
            self.nodes[s as usize]
                .out
                .iter()
                .filter(|&&(_, y)| ty.is_none_or(|t| t == y))
                .map(|&(t, _)| t)
                .collect()
        };
        let mut rng = SplitMix(seed);
        let eligible: Vec<u32> = (0..self.nodes.len() as u32)
            .filter(|&i| self.nodes[i as usize].alive && of_type(i).len() >= 2)
            .collect();
        if eligible.len() < 20 {
            return Vec::new();
        }
        let mut links = Vec::new();
        for _ in 0..sample.min(eligible.len() * 2) {
            let s = eligible[(rng.next_u64() % eligible.len() as u64) as usize];
            let out = of_type(s);
            let t = out[(rng.next_u64() % out.len() as u64) as usize];
            if self.nodes[s as usize]
                .out
                .iter()
                .filter(|&&(x, _)| x == t)
                .count()
                == 1
            {
                links.push((s, t));
            }
        }
        links
    }

    /// The share of up to `sample` links hidden in this graph (as
    /// [`Model::fit`] draws them) ranked among the first ten: the figure
    /// the fit learns from, to set beside the held-out one.
    pub fn hidden_hits10(&self, sample: usize, seed: u64, edge_type: Option<&str>) -> (usize, f64) {
        let mut sc = Scratch::default();
        let links = self.hidden_links(sample, seed, edge_type);
        let hits = links
            .iter()
            .filter(|&&(s, t)| {
                self.suggest_hiding(&mut sc, s, 10, Some(t))
                    .iter()
                    .any(|x| x.target == t)
            })
            .count();
        (links.len(), hits as f64 / links.len().max(1) as f64)
    }

    /// Fits the weights: hides one link of each of `sample` nodes with at
    /// least two links, ranks candidates without it, and fits a logistic
    /// model telling the hidden target from the other candidates (weighted so
    /// each query counts once), by a few hundred steps of gradient descent.
    pub fn fit(&mut self, sample: usize, seed: u64) {
        self.fit_on(sample, seed, None, 0);
    }

    /// [`Model::fit`] on links of `edge_type` only (any type when `None`),
    /// fitting only the weights from `from` on (the others kept: new
    /// features fitted on top of weights that work) when `from` is not 0.
    pub fn fit_on(&mut self, sample: usize, seed: u64, edge_type: Option<&str>, from: usize) {
        let mut sc = Scratch::default();
        let mut data: Vec<(Vec<[f32; FEATURES]>, usize)> = Vec::new();
        for (s, t) in self.hidden_links(sample, seed, edge_type) {
            let cands = self.candidates(&mut sc, s, Some(t));
            let Some(pos) = cands.iter().position(|&(c, _)| c == t) else {
                continue;
            };
            data.push((cands.into_iter().map(|(_, f)| f).collect(), pos));
        }
        if data.len() < 20 {
            return;
        }
        // Softmax (listwise) regression: each query's hidden target against
        // its candidates.
        let mut w = if from > 0 {
            self.weights
        } else {
            [0f64; FEATURES]
        };
        let lr = LR;
        let l2 = 1e-3;
        // The kept weights' part of each candidate's score, computed once:
        // a fit of the last few weights on top of the others costs little.
        let fixed: Vec<Vec<f64>> = data
            .iter()
            .map(|(fs, _)| {
                fs.iter()
                    .map(|f| (0..from).map(|k| w[k] * f64::from(f[k])).sum())
                    .collect()
            })
            .collect();
        let mut zs: Vec<f64> = Vec::new();
        for _ in 0..ITERS {
            let mut g = [0f64; FEATURES];
            for ((fs, pos), fixed) in data.iter().zip(&fixed) {
                zs.clear();
                zs.extend(fs.iter().zip(fixed).map(|(f, z)| {
                    z + (from..FEATURES)
                        .map(|k| w[k] * f64::from(f[k]))
                        .sum::<f64>()
                }));
                let m = zs.iter().copied().fold(f64::MIN, f64::max);
                let den: f64 = zs.iter().map(|z| (z - m).exp()).sum();
                for (i, f) in fs.iter().enumerate() {
                    let p = (zs[i] - m).exp() / den - if i == *pos { 1.0 } else { 0.0 };
                    for k in from..FEATURES {
                        g[k] += p * f64::from(f[k]);
                    }
                }
            }
            for k in from..FEATURES {
                w[k] -= lr * (g[k] / data.len() as f64 + l2 * w[k]);
            }
        }
        // The softmax leaves the bias free: set it so a typical top
        // candidate's confidence reads as its chance of being right.
        let mut right = 0usize;
        let mut tops = Vec::new();
        for (fs, pos) in &data {
            let zs: Vec<f64> = fs
                .iter()
                .map(|f| (0..FEATURES).map(|k| w[k] * f64::from(f[k])).sum())
                .collect();
            let (top, z) = zs
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map(|(i, z)| (i, *z))
                .unwrap_or((0, 0.0));
            if top == *pos {
                right += 1;
            }
            tops.push(z);
        }
        tops.sort_by(f64::total_cmp);
        let p = (right as f64 / data.len() as f64).clamp(0.02, 0.98);
        let median = tops[tops.len() / 2];
        w[0] += (p / (1.0 - p)).ln() - median;
        self.weights = w;
    }

    /// The nodes within two links of `ix` (either direction) with their
    /// distance (0, 1 or 2), into `out`. The links of a node with more than
    /// [`HUB`] links are not followed past it: a change to a hub is near
    /// everything and so relevant to nothing in particular.
    pub fn near(&self, ix: u32, out: &mut HashMap<u32, u8>) {
        out.insert(ix, 0);
        let around = |n: u32| {
            let d = &self.nodes[n as usize];
            d.out.iter().map(|&(t, _)| t).chain(d.inc.iter().copied())
        };
        let degree = |n: u32| self.nodes[n as usize].out.len() + self.nodes[n as usize].inc.len();
        if degree(ix) > HUB {
            return;
        }
        let first: Vec<u32> = around(ix).collect();
        for &n in &first {
            out.entry(n).or_insert(1);
        }
        for &n in &first {
            if degree(n) > HUB {
                continue;
            }
            for m in around(n) {
                out.entry(m).or_insert(2);
            }
        }
    }

    /// How relevant a change to node `b` is to someone looking at node `a`,
    /// 0 to 1, `distance` apart (from [`Model::near`]): 1 for the node
    /// itself; 0.75 next to it, 0.45 two links away, 0 further; plus up to
    /// 0.25 for the neighbours they share (Jaccard) and up to 0.2 for how
    /// alike their texts are (TF-IDF cosine).
    pub fn relevance(&self, a: u32, b: u32, distance: u8) -> f64 {
        let base = match distance {
            0 => return 1.0,
            1 => 0.75,
            2 => 0.45,
            _ => return 0.0,
        };
        let set = |n: u32| -> Vec<u32> {
            let d = &self.nodes[n as usize];
            let mut v: Vec<u32> = d
                .out
                .iter()
                .map(|&(t, _)| t)
                .chain(d.inc.iter().copied())
                .take(HUB)
                .collect();
            v.sort_unstable();
            v.dedup();
            v
        };
        let (x, y) = (set(a), set(b));
        let shared = x.iter().filter(|n| y.binary_search(n).is_ok()).count();
        let union = (x.len() + y.len() - shared).max(1);
        let jaccard = shared as f64 / union as f64;
        let cosine = f64::from(self.cosine(a, b, self.text_norm(a)));
        (base + 0.25 * jaccard + 0.2 * cosine).min(1.0)
    }

    /// Evaluates the model's own fit: hits@10 over hidden links (a test aid).
    pub fn suggest_without(
        &self,
        sc: &mut Scratch,
        s: u32,
        hidden: u32,
        limit: usize,
    ) -> Vec<Suggestion> {
        self.suggest_hiding(sc, s, limit, Some(hidden))
    }
}

/// Weights before any fit: [`Model::fit`] (1,500 hidden links, seed
/// `777 ^ 0x5eed`) on the training graph of my own split, seed 777
/// (`gitmind-load suggest --seed 777 --offline --fit 1500`); the last six
/// (text names, same upstream, name prefix) fitted on top of those, on
/// 1,500 `depends-on` links hidden in the same graph
/// (`--fit 1500 --fit-from 30`; perf-reports/gonzai.md); the last two
/// (analogies) and the bias fitted on top of those on 1,500 `depends-on`
/// links hidden in the training graph of my split seed 31337
/// (`--seed 31337 --offline --fit 1500 --fit-from 36`;
/// perf-reports/gonzai-tuning/round4.md).
const DEFAULT_WEIGHTS: [f64; FEATURES] = [
    -8.95, 0.90, 0.67, -0.03, -1.82, 0.88, 2.96, 3.16, 1.88, -0.78, 1.17, 0.41, -1.81, 0.70, -0.62,
    0.59, 1.48, 0.80, 0.09, 1.95, 0.24, 0.42, 0.85, 2.40, 0.01, 0.73, 0.76, 1.76, 0.64, 0.42, 1.06,
    0.54, -0.24, 0.35, -0.42, -0.02, 0.43, 2.81,
];

/// A small seeded generator (splitmix64).
#[derive(Debug, Clone)]
pub struct SplitMix(pub u64);

impl SplitMix {
    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn text(id: &str) -> NodeText<'_> {
        NodeText {
            id,
            label: "",
            content: "",
            section: "",
            release: "",
        }
    }

    /// Six apps on libx and liby, app6 on libx only.
    fn model() -> Model {
        let ids: Vec<String> = (1..=6).map(|i| format!("pkg:app{i}")).collect();
        let mut edges = Vec::new();
        for id in &ids {
            edges.push((id.as_str(), "depends-on", "pkg:libx"));
            if id != "pkg:app6" {
                edges.push((id.as_str(), "depends-on", "pkg:liby"));
            }
        }
        Model::build(
            ids.iter()
                .map(|i| text(i))
                .chain([text("pkg:libx"), text("pkg:liby")]),
            edges,
            0,
            0,
        )
    }

    #[test]
    fn stems_see_through_lib_digits_and_namespaces() {
        let ns: std::collections::HashSet<String> = ["python".to_string()].into();
        assert_eq!(stem("libfoo-dev", &ns), "foo");
        assert_eq!(stem("libfoo2", &ns), "foo");
        assert_eq!(stem("foo-data", &ns), "foo");
        assert_eq!(stem("python3-foo", &ns), "python-foo");
    }

    #[test]
    fn renames_are_the_middle_parts_two_names_do_not_share() {
        assert_eq!(rename("libzck-dev", "libzck1"), Some(("-dev", "1", 6)));
        assert_eq!(rename("php-soap", "php-odbc"), Some(("soap", "odbc", 4)));
        assert_eq!(
            rename("gobjc-mipsel-linux-gnu", "gobjc++-mipsel-linux-gnu"),
            Some(("", "++", 5))
        );
        assert_eq!(rename("ab", "cd"), None);
    }

    #[test]
    fn analogies_rename_what_a_sibling_links_to() {
        // libzck-dev -> libzstd-dev, so libzck1 -> libzstd1; nothing else
        // points libzck1 at libzstd1.
        let m = Model::build(
            [
                "pkg:libzck-dev",
                "pkg:libzck1",
                "pkg:libzstd-dev",
                "pkg:libzstd1",
                "pkg:libother1",
            ]
            .map(text),
            [
                ("pkg:libzck-dev", "depends-on", "pkg:libzstd-dev"),
                ("pkg:libzck1", "depends-on", "pkg:libother1"),
            ],
            0,
            0,
        );
        let mut sc = Scratch::default();
        let zck = m.node("pkg:libzck1").unwrap();
        let zstd = m.node("pkg:libzstd1").unwrap();
        let cands = m.candidates(&mut sc, zck, None);
        let f = cands.iter().find(|(c, _)| *c == zstd).unwrap().1;
        assert_eq!(f[36], 1.0);
        assert!(cands
            .iter()
            .filter(|(c, _)| *c != zstd)
            .all(|(_, f)| f[36] == 0.0));
    }

    #[test]
    fn upstream_versions_drop_epoch_revision_and_repacking() {
        assert_eq!(upstream("1:1.2+dfsg-3"), "1.2");
        assert_eq!(upstream("0.0.26-3"), "0.0.26");
        assert_eq!(upstream("2.3.1~bpo12-1+b1"), "2.3.1");
        assert_eq!(upstream("3.73"), "3.73");
    }

    #[test]
    fn name_features_see_a_dev_package_and_its_library() {
        let with = |id: &'static str, content: &'static str| NodeText {
            id,
            label: "",
            content,
            section: "",
            release: "1.0-1",
        };
        let m = Model::build(
            [
                with(
                    "pkg:libfoo-dev",
                    "development files for foo, uses the bar library",
                ),
                with("pkg:libfoo7", ""),
                with("pkg:libbar2", ""),
            ],
            [],
            0,
            0,
        );
        let (dev, lib, bar) = (
            m.node("pkg:libfoo-dev").unwrap(),
            m.node("pkg:libfoo7").unwrap(),
            m.node("pkg:libbar2").unwrap(),
        );
        assert!(m.names(dev, bar) && !m.names(bar, dev));
        assert_eq!(m.stem_word(lib), "foo");
    }

    #[test]
    fn suggestions_exclude_the_node_and_its_targets_and_follow_changes() {
        let mut m = model();
        let mut sc = Scratch::default();
        let app6 = m.node("pkg:app6").unwrap();
        let got = m.suggest(&mut sc, app6, 5);
        assert_eq!(m.id(got[0].target), "pkg:liby");
        assert!(got
            .iter()
            .all(|s| s.target != app6 && m.id(s.target) != "pkg:libx"));
        assert!(got.windows(2).all(|w| w[0].confidence >= w[1].confidence));
        m.add_edge("pkg:app6", "depends-on", "pkg:liby");
        let got = m.suggest(&mut sc, app6, 5);
        assert!(got.iter().all(|s| m.id(s.target) != "pkg:liby"));
        m.remove_edge("pkg:app6", "depends-on", "pkg:liby");
        assert!(!m.links(app6, m.node("pkg:liby").unwrap()));
        assert_eq!(m.id(m.suggest(&mut sc, app6, 1)[0].target), "pkg:liby");
        m.remove_node("pkg:liby");
        assert!(m.node("pkg:liby").is_none());
        assert!(m
            .suggest(&mut sc, app6, 5)
            .iter()
            .all(|s| m.id(s.target) != "pkg:liby"));
        assert_eq!(m.len(), 7);
    }

    #[test]
    fn the_shipped_ranker_reads_the_inputs_this_model_gives() {
        assert_eq!(RANKER.inputs, input_names());
        assert_eq!(input_names().len(), INPUTS);
        assert!(RANKER.depth >= 50, "the trees order a whole answer");
    }

    #[test]
    fn relevance_falls_with_distance() {
        let m = model();
        let (app1, libx, app2, liby) = (
            m.node("pkg:app1").unwrap(),
            m.node("pkg:libx").unwrap(),
            m.node("pkg:app2").unwrap(),
            m.node("pkg:liby").unwrap(),
        );
        let mut near = HashMap::new();
        m.near(app1, &mut near);
        assert_eq!((near[&app1], near[&libx], near[&app2]), (0, 1, 2));
        assert_eq!(m.relevance(app1, app1, 0), 1.0);
        let one = m.relevance(libx, app1, 1);
        let two = m.relevance(app1, app2, 2);
        assert!(one >= 0.75 && two >= 0.45 && two < one, "{one} {two}");
        // libx and liby share five of their six neighbours.
        assert!(m.relevance(libx, liby, 2) > 0.45 + 0.2);
        assert_eq!(m.relevance(app1, app2, 3), 0.0);
    }

    #[test]
    fn fitting_a_graph_too_small_to_learn_from_keeps_the_answer() {
        let mut m = model();
        m.fit(50, 3);
        let mut sc = Scratch::default();
        let app6 = m.node("pkg:app6").unwrap();
        assert_eq!(m.id(m.suggest(&mut sc, app6, 1)[0].target), "pkg:liby");
    }
}
