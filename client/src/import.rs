//! Loading many nodes and edges into a graph: creations go in batches
//! (`batch.update`), several in flight at once; a batch with edges waits
//! until every node batch sent before it is committed, so an edge never
//! arrives before its nodes. Used by `gitmind import` and the soak test.

use std::time::Duration;

use anyhow::{bail, Context as _};
use gitmind_schema::message::{BatchOp, BatchUpdate, EdgeCreate, NodeCreate};
use gitmind_schema::model::{Edge, Node};
use gitmind_schema::Body;
use tokio::task::JoinSet;

use crate::{Client, Outcome};

/// Ops per batch and estimated bytes per batch, inside the server's limits.
const BATCH_OPS: usize = 1000;
const BATCH_BYTES: usize = 768 * 1024;
/// Batches in flight at once.
const WINDOW: usize = 4;
/// Time allowed for one batch's outcome.
const BATCH_TIMEOUT: Duration = Duration::from_secs(120);

/// Imports creations in batches; [`Importer::finish`] sends the rest and
/// waits for every outcome.
pub struct Importer {
    client: Client,
    batch: Vec<BatchOp>,
    batch_bytes: usize,
    in_flight: JoinSet<anyhow::Result<()>>,
    nodes_in_flight: bool,
    nodes: u64,
    edges: u64,
}

impl Importer {
    /// Imports through `client`.
    pub fn new(client: Client) -> Self {
        Importer {
            client,
            batch: Vec::new(),
            batch_bytes: 0,
            in_flight: JoinSet::new(),
            nodes_in_flight: false,
            nodes: 0,
            edges: 0,
        }
    }

    /// Nodes and edges queued so far.
    pub fn counts(&self) -> (u64, u64) {
        (self.nodes, self.edges)
    }

    /// Queues a node; `json_bytes` is about the size of its JSON form.
    ///
    /// # Errors
    /// An earlier batch was rolled back or got no outcome in time.
    pub async fn node(&mut self, node: Node, json_bytes: usize) -> anyhow::Result<()> {
        self.nodes += 1;
        let op = BatchOp::NodeCreate(NodeCreate {
            base_seq: None,
            node,
            commit: None,
        });
        self.push(op, json_bytes).await
    }

    /// Queues an edge; `json_bytes` is about the size of its JSON form.
    ///
    /// # Errors
    /// An earlier batch was rolled back or got no outcome in time.
    pub async fn edge(&mut self, edge: Edge, json_bytes: usize) -> anyhow::Result<()> {
        self.edges += 1;
        let op = BatchOp::EdgeCreate(EdgeCreate {
            base_seq: None,
            edge,
            commit: None,
        });
        self.push(op, json_bytes).await
    }

    async fn push(&mut self, op: BatchOp, json_bytes: usize) -> anyhow::Result<()> {
        // Generous: escaping and the binary form stay well below twice the text.
        self.batch_bytes += 2 * json_bytes + 64;
        self.batch.push(op);
        if self.batch.len() == BATCH_OPS || self.batch_bytes >= BATCH_BYTES {
            self.send().await?;
        }
        Ok(())
    }

    async fn send(&mut self) -> anyhow::Result<()> {
        let has_nodes = self
            .batch
            .iter()
            .any(|op| matches!(op, BatchOp::NodeCreate(_)));
        let has_edges = self
            .batch
            .iter()
            .any(|op| matches!(op, BatchOp::EdgeCreate(_)));
        if has_edges && self.nodes_in_flight {
            self.drain(0).await?;
            self.nodes_in_flight = false;
        }
        self.drain(WINDOW - 1).await?;
        self.nodes_in_flight |= has_nodes;
        let ops = std::mem::take(&mut self.batch);
        self.batch_bytes = 0;
        let client = self.client.clone();
        self.in_flight
            .spawn(async move { send_batch(&client, ops).await });
        Ok(())
    }

    /// Sends what is queued and waits for every outcome; returns the nodes
    /// and edges imported.
    ///
    /// # Errors
    /// A batch was rolled back or got no outcome in time.
    pub async fn finish(mut self) -> anyhow::Result<(u64, u64)> {
        if !self.batch.is_empty() {
            self.send().await?;
        }
        self.drain(0).await?;
        Ok((self.nodes, self.edges))
    }

    async fn drain(&mut self, keep: usize) -> anyhow::Result<()> {
        while self.in_flight.len() > keep {
            match self.in_flight.join_next().await {
                Some(result) => result??,
                None => break,
            }
        }
        Ok(())
    }
}

async fn send_batch(client: &Client, ops: Vec<BatchOp>) -> anyhow::Result<()> {
    let first = ops.first().map(op_id).unwrap_or_default();
    let outcome = tokio::time::timeout(
        BATCH_TIMEOUT,
        client.mutate(Body::BatchUpdate(BatchUpdate {
            base_seq: None,
            ops,
            commit: None,
        })),
    )
    .await
    .with_context(|| format!("no outcome for a batch within {BATCH_TIMEOUT:?}"))??;
    match outcome {
        Outcome::Confirmed(_) | Outcome::Resolved(_) => Ok(()),
        Outcome::RolledBack(r) => {
            bail!(
                "a batch starting at {first} was rolled back (op {:?}): {}; nothing of it was applied",
                r.index,
                r.message
            )
        }
    }
}

fn op_id(op: &BatchOp) -> String {
    match op {
        BatchOp::NodeCreate(c) => c.node.id.clone(),
        BatchOp::EdgeCreate(c) => Edge::make_id(&c.edge.source, &c.edge.edge_type, &c.edge.target),
        _ => String::new(),
    }
}
