//! The re-ranker of link suggestions: gradient-boosted trees (the
//! `perpetual` crate) over the features of the linear model's best
//! [`RERANK`] candidates and their linear score (perf-reports/gonzai.md).
//!
//! The linear model ([`super::suggest::Model`]) adds up evidence; the trees
//! learn where it interacts (a shared stem matters for a `-dev` package, a
//! co-link share matters when few nodes link to the target). They are
//! trained the way the linear weights are: one link of each of a sample of
//! nodes of a graph hidden, the rest ranking candidates, the hidden target
//! the positive (`gitmind-load suggest --offline --rerank N`), and ship in
//! `rerank.json`.

use std::sync::{Arc, OnceLock};

use perpetual::booster::config::BoosterIO as _;
use perpetual::objective::Objective;
use perpetual::{Matrix, PerpetualBooster};

use super::suggest::FEATURES;

/// The trees re-rank this many of the linear model's best candidates.
pub const RERANK: usize = 100;

/// Inputs of a row: the features without the bias, the linear score, its
/// rank among the candidates and its gap to the best score.
const INPUTS: usize = FEATURES - 1 + 3;

/// The trees shipped with the server.
const SHIPPED: &str = include_str!("rerank.json");

/// One query for training: its candidates' features and linear scores, and
/// which candidate is the hidden link (if among them).
pub type Query = (Vec<[f32; FEATURES]>, Vec<f64>, Option<usize>);

/// Gradient-boosted trees scoring candidates.
pub struct Reranker {
    booster: PerpetualBooster,
}

impl std::fmt::Debug for Reranker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reranker")
            .field("trees", &self.booster.get_prediction_trees().len())
            .finish()
    }
}

/// Why trees could not be trained or read.
#[derive(Debug, thiserror::Error)]
pub enum RerankError {
    /// The trees' JSON could not be read or written.
    #[error("re-ranker trees: {0}")]
    Trees(String),
    /// No query had the hidden link among its candidates.
    #[error("no query to learn from")]
    Empty,
}

impl Reranker {
    /// The trees shipped with the server (read once), or `None` when they
    /// cannot be read (then the linear model ranks alone).
    pub fn shipped() -> Option<Arc<Reranker>> {
        static TREES: OnceLock<Option<Arc<Reranker>>> = OnceLock::new();
        TREES
            .get_or_init(|| match Reranker::from_json(SHIPPED) {
                Ok(r) => Some(Arc::new(r)),
                Err(e) => {
                    tracing::warn!(error = %e, "gonzai: ranking without the re-ranker");
                    None
                }
            })
            .clone()
    }

    /// Trees read from their JSON.
    ///
    /// # Errors
    ///
    /// [`RerankError::Trees`] when the JSON is not a booster's.
    pub fn from_json(json: &str) -> Result<Self, RerankError> {
        PerpetualBooster::from_json(json)
            .map(|booster| Reranker { booster })
            .map_err(|e| RerankError::Trees(e.to_string()))
    }

    /// The trees as JSON.
    ///
    /// # Errors
    ///
    /// [`RerankError::Trees`] when they cannot be written.
    pub fn to_json(&self) -> Result<String, RerankError> {
        self.booster
            .json_dump()
            .map_err(|e| RerankError::Trees(e.to_string()))
    }

    /// Trees fitted to tell each query's hidden link from its other
    /// candidates (each query's best [`RERANK`] candidates by linear
    /// score): by log loss, or `listwise` by ListNet over each query's
    /// candidates; `budget` their complexity (perpetual's one knob).
    ///
    /// # Errors
    ///
    /// [`RerankError::Empty`] when no query has its hidden link among its
    /// candidates; [`RerankError::Trees`] when the booster fails.
    pub fn fit(queries: &[Query], budget: f32, listwise: bool) -> Result<Self, RerankError> {
        let mut columns: Vec<Vec<f64>> = vec![Vec::new(); INPUTS];
        let mut y = Vec::new();
        let mut groups = Vec::new();
        // ListNet compares softmaxes: a high label makes the hidden link's
        // share nearly one.
        let label = if listwise { 10.0 } else { 1.0 };
        for (features, linear, pos) in queries {
            if listwise && pos.is_none() {
                continue;
            }
            let rows = inputs(features, linear);
            groups.push(rows.len() as u64);
            for (i, row) in rows.iter().enumerate() {
                for (c, v) in row.iter().enumerate() {
                    columns[c].push(*v);
                }
                y.push(if Some(i) == *pos { label } else { 0.0 });
            }
        }
        if !y.iter().any(|&v| v > 0.0) {
            return Err(RerankError::Empty);
        }
        let data: Vec<f64> = columns.concat();
        let matrix = Matrix::new(&data, y.len(), INPUTS);
        let objective = if listwise {
            Objective::ListNetLoss
        } else {
            Objective::LogLoss
        };
        let mut booster = PerpetualBooster::default()
            .set_objective(objective)
            .set_budget(budget)
            .set_seed(7);
        booster
            .fit(&matrix, &y, None, listwise.then_some(&groups[..]))
            .map_err(|e| RerankError::Trees(e.to_string()))?;
        Ok(Reranker { booster })
    }

    /// The trees' log-odds for candidates with these features and linear
    /// scores (given best first).
    pub fn score(&self, features: &[[f32; FEATURES]], linear: &[f64]) -> Vec<f64> {
        let rows = inputs(features, linear);
        let n = rows.len();
        let mut data = vec![0.0; n * INPUTS];
        for (r, row) in rows.iter().enumerate() {
            for (c, v) in row.iter().enumerate() {
                data[c * n + r] = *v;
            }
        }
        self.booster.predict(&Matrix::new(&data, n, INPUTS), false)
    }
}

/// The trees' inputs of candidates given best first by linear score.
fn inputs(features: &[[f32; FEATURES]], linear: &[f64]) -> Vec<[f64; INPUTS]> {
    let top = linear.first().copied().unwrap_or(0.0);
    features
        .iter()
        .zip(linear)
        .enumerate()
        .map(|(rank, (f, &z))| {
            let mut row = [0.0; INPUTS];
            for (k, x) in f[1..].iter().enumerate() {
                row[k] = f64::from(*x);
            }
            row[FEATURES - 1] = z;
            row[FEATURES] = rank as f64;
            row[FEATURES + 1] = top - z;
            row
        })
        .collect()
}
