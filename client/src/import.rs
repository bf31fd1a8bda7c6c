//! Loading many nodes and edges into a graph: creations go in batches
//! (`batch.update`), several in flight at once; a batch with edges waits
//! until every node batch sent before it is committed, so an edge never
//! arrives before its nodes. Used by `gitmind import` and the soak test.

use std::time::Duration;

use gitmind_schema::message::{BatchOp, BatchUpdate, EdgeCreate, NodeCreate, RollbackReason};
use gitmind_schema::model::{Edge, Node};
use gitmind_schema::Body;
use tokio::task::{JoinError, JoinSet};

use crate::client::ClientError;
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
    in_flight: JoinSet<Result<(), ImportError>>,
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
    /// An earlier batch was rolled back, got no outcome in time or could
    /// not be sent (see [`ImportError`]).
    pub async fn node(&mut self, node: Node, json_bytes: usize) -> Result<(), ImportError> {
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
    /// An earlier batch was rolled back, got no outcome in time or could
    /// not be sent (see [`ImportError`]).
    pub async fn edge(&mut self, edge: Edge, json_bytes: usize) -> Result<(), ImportError> {
        self.edges += 1;
        let op = BatchOp::EdgeCreate(EdgeCreate {
            base_seq: None,
            edge,
            commit: None,
        });
        self.push(op, json_bytes).await
    }

    async fn push(&mut self, op: BatchOp, json_bytes: usize) -> Result<(), ImportError> {
        // Generous: escaping and the binary form stay well below twice the text.
        self.batch_bytes += 2 * json_bytes + 64;
        self.batch.push(op);
        if self.batch.len() == BATCH_OPS || self.batch_bytes >= BATCH_BYTES {
            self.send().await?;
        }
        Ok(())
    }

    async fn send(&mut self) -> Result<(), ImportError> {
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
    /// A batch was rolled back, got no outcome in time or could not be
    /// sent (see [`ImportError`]).
    pub async fn finish(mut self) -> Result<(u64, u64), ImportError> {
        if !self.batch.is_empty() {
            self.send().await?;
        }
        self.drain(0).await?;
        Ok((self.nodes, self.edges))
    }

    async fn drain(&mut self, keep: usize) -> Result<(), ImportError> {
        while self.in_flight.len() > keep {
            match self.in_flight.join_next().await {
                Some(result) => result??,
                None => break,
            }
        }
        Ok(())
    }
}

/// Why an import stopped. Nothing of the failed batch was applied; the
/// batches before it may have been.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The client could not send a batch (it is closed).
    #[error("cannot send a batch")]
    Client(#[from] ClientError),
    /// A batch got no outcome within the time allowed.
    #[error("no outcome for a batch within {0:?}")]
    Timeout(Duration),
    /// The server rolled a batch back.
    #[error(
        "a batch starting at {first} was rolled back (op {index:?}): {message}; nothing of it was applied"
    )]
    RolledBack {
        /// The id of the batch's first node or edge, to find it in the input.
        first: String,
        /// The batch's mutation id (the rollback's `ref`).
        reference: String,
        /// Why the server refused it.
        reason: RollbackReason,
        /// The index of the op that failed, when the server names one.
        index: Option<u32>,
        /// The server's explanation, for a person.
        message: String,
    },
    /// The task waiting for a batch's outcome ended without one (it
    /// panicked or was cancelled).
    #[error("the task sending a batch failed")]
    Task(#[from] JoinError),
}

async fn send_batch(client: &Client, ops: Vec<BatchOp>) -> Result<(), ImportError> {
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
    .map_err(|_| ImportError::Timeout(BATCH_TIMEOUT))??;
    match outcome {
        Outcome::Confirmed(_) | Outcome::Resolved(_) => Ok(()),
        Outcome::RolledBack(r) => Err(ImportError::RolledBack {
            first,
            reference: r.reference,
            reason: r.reason,
            index: r.index,
            message: r.message,
        }),
    }
}

fn op_id(op: &BatchOp) -> String {
    match op {
        BatchOp::NodeCreate(c) => c.node.id.clone(),
        BatchOp::EdgeCreate(c) => Edge::make_id(&c.edge.source, &c.edge.edge_type, &c.edge.target),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    #[test]
    fn a_client_error_stays_in_the_source_chain() {
        // The CLI looks for a `ClientError` in the chain to give hints.
        let e = ImportError::from(ClientError::Closed("gone".into()));
        assert_eq!(e.to_string(), "cannot send a batch");
        let source = e.source().and_then(|s| s.downcast_ref::<ClientError>());
        assert!(matches!(source, Some(ClientError::Closed(_))));
    }

    #[test]
    fn binaries_can_carry_it_in_anyhow() {
        // What `anyhow::Error: From<E>` asks of `E` (`gitmind`, the soak test).
        fn carried<E: std::error::Error + Send + Sync + 'static>() {}
        carried::<ImportError>();
    }
}
