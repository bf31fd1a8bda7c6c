//! What can go wrong in persistence: one error type per operation, because
//! callers handle each differently. Opening stops the server from starting;
//! a failed commit rolls its changes back (clients see only `unavailable`);
//! `verify` lists problems for a person to read.

use std::path::PathBuf;

/// The data directory could not be opened, or its graphs not loaded: the
/// server does not start on half a graph.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
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
    /// A stored graph could not be read back.
    #[error(transparent)]
    Load(#[from] LoadError),
}

impl OpenError {
    /// An I/O error with what was being done.
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> OpenError {
        OpenError::Io {
            context: context.into(),
            source,
        }
    }
}

/// A stored graph could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A git operation failed (reading an object, a ref).
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
    /// A file could not be read (a graph's ref, loading on demand).
    #[error("{context}: {source}")]
    Io {
        /// What was being read.
        context: String,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The persistence thread has stopped: nothing more is loaded.
    #[error("persistence has stopped")]
    Stopped,
}

impl LoadError {
    /// Damage found in a graph.
    pub(crate) fn corrupt(graph: &str, detail: impl Into<String>) -> LoadError {
        LoadError::Corrupt {
            graph: graph.to_owned(),
            detail: detail.into(),
        }
    }
}

/// Why a group of changes was not committed ([`super::PersistEvent::Failed`]).
/// For the server's log: clients are told only `unavailable`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommitError {
    /// Back-pressure: too many changes wait for the thread.
    #[error("the persistence queue is full ({waiting} changes waiting)")]
    QueueFull {
        /// Changes waiting when the group came.
        waiting: u64,
    },
    /// The thread has stopped.
    #[error("persistence has stopped")]
    Stopped,
    /// The group cannot be stored as handed over (a graph name that is not
    /// a ref, changes out of order): a bug in the caller.
    #[error("group refused: {0}")]
    Refused(String),
    /// Writing failed: the pack, a ref, the disk.
    #[error("{0}")]
    Storage(String),
}

/// What `verify` found.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// There is no readable repository.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// A graph could not be read at all.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The repository is inconsistent.
    #[error("verify found {} problem(s), first: {}", problems.len(), problems.first().map_or("", String::as_str))]
    Inconsistent {
        /// Every problem found, one line each.
        problems: Vec<String>,
    },
}

/// The persistence thread stopped unexpectedly (it panicked).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the persistence thread stopped unexpectedly")]
pub struct ThreadGone;
