//! STAND-IN until git persistence lands (branch `persist`): the API the
//! server drives; it "commits" at once and keeps nothing.
#![allow(missing_docs)]

use std::path::{Path, PathBuf};

use crate::change::{Group, Restored};

#[derive(Debug, Clone)]
pub struct PersistConfig {
    pub data_dir: PathBuf,
    pub fsync: bool,
    pub replay_changes: usize,
    pub replay_ms: u64,
    pub max_group_changes: usize,
}

#[derive(Debug, Clone)]
pub enum PersistEvent {
    Committed {
        graph: String,
        upto: u64,
        commit: String,
    },
    Failed {
        graph: String,
        from_seq: u64,
        error: String,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

pub struct Persister {
    tx: crossbeam::channel::Sender<Group>,
    thread: std::thread::JoinHandle<()>,
}

impl Persister {
    pub fn start(
        config: PersistConfig,
        events: crossbeam::channel::Sender<PersistEvent>,
    ) -> Result<(Persister, Vec<Restored>), PersistError> {
        std::fs::create_dir_all(&config.data_dir)?;
        let (tx, rx) = crossbeam::channel::bounded::<Group>(1024);
        let thread = std::thread::spawn(move || {
            for g in rx {
                let upto = g.changes.last().map_or(0, |c| c.seq);
                let _ = events.send(PersistEvent::Committed {
                    graph: g.graph,
                    upto,
                    commit: format!("{upto:040x}"),
                });
            }
        });
        Ok((Persister { tx, thread }, vec![]))
    }
    pub fn submit(&self, group: Group) {
        let _ = self.tx.send(group);
    }
    pub fn shutdown(self) -> Result<(), PersistError> {
        drop(self.tx);
        let _ = self.thread.join();
        Ok(())
    }
}

pub fn verify(_data_dir: &Path) -> Result<(), PersistError> {
    Ok(())
}
