//! What can go wrong in persistence, as the server sees it.

use std::path::PathBuf;

/// An error of the persistence layer: opening, loading, committing,
/// verifying, shutting down.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    /// The data directory or its repository could not be created or opened.
    #[error("cannot open the repository at {path}: {source}")]
    Open {
        /// The repository's path.
        path: PathBuf,
        /// Why.
        source: git2::Error,
    },
    /// A file system operation failed (disk full, permission denied, I/O).
    #[error("{context}: {source}")]
    Io {
        /// What was being done, and on which path.
        context: String,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// A git operation failed (reading an object, moving a ref).
    #[error("git: {0}")]
    Git(#[from] git2::Error),
    /// Stored data is not what this version writes: damaged or edited by hand.
    #[error("graph `{graph}` is damaged: {detail}")]
    Corrupt {
        /// The graph concerned.
        graph: String,
        /// What is wrong, and where.
        detail: String,
    },
    /// A group could not be committed as handed over (bad graph name or
    /// epoch, changes out of order).
    #[error("refused: {0}")]
    Refused(String),
    /// `verify` found the repository inconsistent.
    #[error("verify found {} problem(s), first: {}", problems.len(), problems.first().map_or("", String::as_str))]
    Inconsistent {
        /// Every problem found, one line each.
        problems: Vec<String>,
    },
    /// The persistence thread stopped unexpectedly (it panicked).
    #[error("the persistence thread stopped unexpectedly")]
    ThreadGone,
}

impl PersistError {
    /// An I/O error with what was being done.
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> PersistError {
        PersistError::Io {
            context: context.into(),
            source,
        }
    }

    /// Damage found in a graph.
    pub(crate) fn corrupt(graph: &str, detail: impl Into<String>) -> PersistError {
        PersistError::Corrupt {
            graph: graph.to_owned(),
            detail: detail.into(),
        }
    }
}
