//! The second step of the ranking: gradient-boosted regression trees that
//! order again the best candidates of the linear score (perf-reports/gonzai.md).
//!
//! The trees are fitted offline with LightGBM's lambdarank objective by
//! `bench/gonzai-ranker/train.py` on links hidden from the Debian graph
//! (never on the report's split), and shipped as `ranker.json`: for each
//! tree, its split nodes (feature, threshold, children) and its leaves'
//! values. A child below zero is the leaf `!child`; a value goes left when
//! it is at most the threshold (LightGBM's numerical split; the features
//! are never missing). Evaluating a few hundred small trees is a few
//! comparisons each, so they are walked here rather than through a
//! library.

use serde::Deserialize;

/// One regression tree as `ranker.json` holds it, as arrays over its split
/// nodes.
#[derive(Debug, Clone, Deserialize)]
struct Tree {
    /// Feature of each split node.
    f: Vec<u16>,
    /// Threshold of each split node.
    t: Vec<f64>,
    /// Left child of each split node (`!leaf` when below zero).
    l: Vec<i32>,
    /// Right child of each split node.
    r: Vec<i32>,
    /// Value of each leaf.
    v: Vec<f64>,
}

/// `ranker.json`.
#[derive(Debug, Clone, Deserialize)]
struct Shipped {
    inputs: Vec<String>,
    depth: usize,
    scale: f64,
    offset: f64,
    trees: Vec<Tree>,
    #[serde(default)]
    checks: Vec<(Vec<f32>, f64)>,
}

/// A node as walked: go to `kids[x > threshold]`. A leaf goes to itself
/// whatever the input, so every walk of a tree takes its depth in steps,
/// without a branch to mispredict.
#[derive(Debug, Clone, Copy)]
struct Node {
    /// The largest `f32` at most the tree's threshold: for an `f32` input
    /// `x`, `x <= threshold` exactly when `x <= this`.
    threshold: f32,
    feature: u32,
    /// The children, as places in the tree's nodes.
    kids: [u32; 2],
}

/// Candidates walked down one tree side by side.
const LANES: usize = 8;

/// The shipped trees, with what maps their sum to a confidence.
#[derive(Debug, Clone)]
pub struct Ranker {
    /// The inputs, in order (checked against [`super::suggest`]'s).
    pub inputs: Vec<String>,
    /// How many of the linear ranking's best candidates are ordered again.
    pub depth: usize,
    /// Confidence of a sum `g`: `1 / (1 + exp(-(scale * g + offset)))`,
    /// fitted on the training links (Platt scaling).
    scale: f64,
    offset: f64,
    /// Every tree's nodes, split nodes then leaves, one tree after another.
    nodes: Vec<Node>,
    /// The value of each node (0 for split nodes).
    values: Vec<f64>,
    /// Where each tree's nodes begin, and its depth.
    trees: Vec<(usize, u32)>,
    /// Inputs and LightGBM's own score for them, to check the walk.
    pub checks: Vec<(Vec<f32>, f64)>,
}

impl Ranker {
    /// The ranker shipped with the server.
    pub fn shipped() -> Self {
        Self::parse(include_str!("ranker.json")).expect("ranker.json is valid")
    }

    fn parse(json: &str) -> Result<Self, serde_json::Error> {
        let s: Shipped = serde_json::from_str(json)?;
        let mut r = Ranker {
            inputs: s.inputs,
            depth: s.depth,
            scale: s.scale,
            offset: s.offset,
            nodes: Vec::new(),
            values: Vec::new(),
            trees: Vec::new(),
            checks: s.checks,
        };
        for t in s.trees {
            let splits = t.f.len();
            let place = |kid: i32| {
                if kid < 0 {
                    splits as u32 + !kid as u32
                } else {
                    kid as u32
                }
            };
            // A binary tree: one leaf more than its splits. Each child comes
            // after its node (LightGBM numbers splits in the order it makes
            // them), which the depth below relies on.
            let sizes = [t.t.len(), t.l.len(), t.r.len(), t.v.len()];
            let fits = sizes == [splits, splits, splits, splits + 1]
                && (0..splits).all(|i| {
                    usize::from(t.f[i]) < r.inputs.len()
                        && [t.l[i], t.r[i]].iter().all(|&k| {
                            (k < 0 && ((!k) as usize) < t.v.len())
                                || (k as usize > i && (k as usize) < splits)
                        })
                });
            if !fits {
                return Err(serde::de::Error::custom(
                    "a tree's nodes do not fit together",
                ));
            }
            for i in 0..splits {
                let mut threshold = t.t[i] as f32;
                if f64::from(threshold) > t.t[i] {
                    threshold = below(threshold);
                }
                r.nodes.push(Node {
                    threshold,
                    feature: u32::from(t.f[i]),
                    kids: [place(t.l[i]), place(t.r[i])],
                });
            }
            for leaf in 0..t.v.len() {
                let me = (splits + leaf) as u32;
                r.nodes.push(Node {
                    threshold: f32::INFINITY,
                    feature: 0,
                    kids: [me, me],
                });
            }
            r.values
                .extend(std::iter::repeat_n(0.0, splits).chain(t.v.iter().copied()));
            // The depth: the longest walk from the root to a leaf.
            let mut depth = vec![0u32; splits + t.v.len()];
            let mut deepest = 0;
            for i in 0..splits {
                for k in [t.l[i], t.r[i]] {
                    depth[place(k) as usize] = depth[i] + 1;
                    deepest = deepest.max(depth[i] + 1);
                }
            }
            let first = r.nodes.len() - depth.len();
            r.trees.push((first, deepest));
        }
        Ok(r)
    }

    /// The trees' score of each candidate's inputs (higher: better), into
    /// `out`. Eight candidates at a time walk each tree side by side,
    /// so their walks overlap in the processor.
    pub fn score_all<const N: usize>(&self, xs: &[[f32; N]], out: &mut Vec<f64>) {
        out.clear();
        out.resize(xs.len(), 0.0);
        for (xs, out) in xs.chunks(LANES).zip(out.chunks_mut(LANES)) {
            // A short last chunk walks copies of its last candidate too.
            let lanes: [&[f32; N]; LANES] = std::array::from_fn(|j| &xs[j.min(xs.len() - 1)]);
            for &(first, depth) in &self.trees {
                let nodes = &self.nodes[first..];
                let mut at = [0u32; LANES];
                for _ in 0..depth {
                    for (n, x) in at.iter_mut().zip(lanes) {
                        let node = nodes[*n as usize];
                        *n = node.kids[usize::from(x[node.feature as usize] > node.threshold)];
                    }
                }
                for (o, n) in out.iter_mut().zip(at) {
                    *o += self.values[first + n as usize];
                }
            }
        }
    }

    /// The trees' score of one candidate's inputs.
    pub fn score<const N: usize>(&self, x: &[f32; N]) -> f64 {
        let mut out = Vec::with_capacity(1);
        self.score_all(std::slice::from_ref(x), &mut out);
        out[0]
    }

    /// The confidence of a score.
    pub fn confidence(&self, score: f64) -> f64 {
        1.0 / (1.0 + (-(self.scale * score + self.offset)).exp())
    }
}

/// The largest `f32` below `x` (`f32::next_down`, newer than our MSRV),
/// for a finite `x`.
fn below(x: f32) -> f32 {
    if x > 0.0 {
        f32::from_bits(x.to_bits() - 1)
    } else if x < 0.0 {
        f32::from_bits(x.to_bits() + 1)
    } else {
        -f32::from_bits(1)
    }
}

#[cfg(test)]
mod tests {
    use super::super::suggest::INPUTS;
    use super::*;

    #[test]
    fn the_walk_gives_lightgbms_scores() {
        let r = Ranker::shipped();
        assert!(r.checks.len() >= 10);
        for (x, want) in &r.checks {
            let x: [f32; INPUTS] = x.as_slice().try_into().expect("every input");
            let got = r.score(&x);
            assert!((got - want).abs() < 1e-6, "{got} against {want}");
        }
    }

    #[test]
    fn splits_and_leaves_are_read_as_lightgbm_writes_them() {
        // x0 <= 0.5 ? (x1 <= 2 ? 1 : 2) : 3, and a tree of one leaf, 0.25.
        // 0.1 is no f32: an input of 0.1f32 (above 0.1) goes right.
        let r = Ranker::parse(
            r#"{"inputs": ["a", "b"], "depth": 1, "scale": 1, "offset": 0, "trees": [
                {"f": [0, 1], "t": [0.5, 2.0], "l": [1, -1], "r": [-3, -2], "v": [1, 2, 3]},
                {"f": [], "t": [], "l": [], "r": [], "v": [0.25]},
                {"f": [1], "t": [0.1], "l": [-1], "r": [-2], "v": [0, 10]}]}"#,
        )
        .expect("a valid ranker");
        assert_eq!(r.score(&[0.5, 2.0]), 1.25 + 10.0);
        assert_eq!(r.score(&[0.0, 2.5]), 2.25 + 10.0);
        assert_eq!(r.score(&[0.6, 0.0]), 3.25);
        assert_eq!(r.score(&[0.6, 0.1]), 13.25);
        assert_eq!(r.score(&[0.6, 0.099_999_99]), 3.25);
    }

    #[test]
    fn trees_that_do_not_fit_together_are_refused() {
        let tree = |t: &str| {
            Ranker::parse(&format!(
                r#"{{"inputs": ["a", "b"], "depth": 1, "scale": 1, "offset": 0, "trees": [{t}]}}"#
            ))
        };
        assert!(tree(r#"{"f": [0], "t": [0.5], "l": [-1], "r": [-2], "v": [1, 2]}"#).is_ok());
        // A feature past the inputs, a child before its node, a leaf
        // that is not there, a threshold missing, no leaf at all.
        assert!(tree(r#"{"f": [2], "t": [0.5], "l": [-1], "r": [-2], "v": [1, 2]}"#).is_err());
        assert!(
            tree(r#"{"f": [0, 1], "t": [0.5, 1], "l": [1, 0], "r": [-2, -1], "v": [1, 2]}"#)
                .is_err()
        );
        assert!(tree(r#"{"f": [0], "t": [0.5], "l": [-1], "r": [-3], "v": [1, 2]}"#).is_err());
        assert!(tree(r#"{"f": [0], "t": [], "l": [-1], "r": [-2], "v": [1, 2]}"#).is_err());
        assert!(tree(r#"{"f": [], "t": [], "l": [], "r": [], "v": []}"#).is_err());
    }

    #[test]
    fn below_is_the_next_f32_down() {
        for x in [1.0f32, 0.1, -0.1, -1.0, 3.4e38, 1e-40] {
            let b = below(x);
            // Below, and the neighbour: nothing lies between.
            assert!(b < x);
            assert_eq!(x.to_bits().abs_diff(b.to_bits()), 1);
        }
        assert_eq!(below(0.0), -f32::from_bits(1));
    }
}
