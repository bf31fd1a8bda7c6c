//! The servers under test: one alone, or with `--cluster N` N servers on
//! one data directory and one `nats-server` (docs/scale-out.md), the
//! graph's owner being the one stopped at each restart.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use gitmind_bench::server::{ServerUnderTest, Stop};
use gitmind_testkit::Nats;
use tokio::time::Instant;

/// How long a graph's lease may take to move to another node after its
/// owner stopped: the lease's TTL (3 s) and its watch, with room.
const TAKEOVER: Duration = Duration::from_secs(30);

/// The servers under test.
pub struct Nodes {
    /// Node `i` of a cluster is `n{i}`.
    pub servers: Vec<ServerUnderTest>,
    /// The data directory they share.
    pub data: PathBuf,
    /// With `--cluster`: the NATS server and its store.
    nats: Option<(Nats, PathBuf)>,
}

/// A restart: which server, and when the graph had an owner again.
pub struct Restarted {
    /// The server stopped and started again.
    pub node: usize,
    /// In a cluster: from the stop until another node owned the graph.
    pub takeover: Option<Duration>,
}

impl Nodes {
    /// One server, or `cluster` servers of a cluster when it is above 0.
    ///
    /// # Errors
    /// A server or `nats-server` cannot be started.
    pub async fn start(cluster: usize, server_args: &[String]) -> anyhow::Result<Nodes> {
        if cluster == 0 {
            let server = ServerUnderTest::start(server_args).await?;
            let data = server
                .data
                .clone()
                .context("a started server has a data directory")?;
            return Ok(Nodes {
                servers: vec![server],
                data,
                nats: None,
            });
        }
        let binary = gitmind_testkit::nats::binary()
            .context("--cluster needs nats-server (apt-get install nats-server)")?;
        let data = std::env::temp_dir().join(format!(
            "gitmind-soak-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        let store = data.with_extension("nats");
        let nats = Nats::start(&binary, &store).await?;
        let mut servers = Vec::with_capacity(cluster);
        for i in 0..cluster {
            let mut args = server_args.to_vec();
            args.extend([
                "--cluster".to_owned(),
                nats.url.clone(),
                "--node".to_owned(),
                format!("n{i}"),
            ]);
            // The first removes the shared directory when dropped.
            servers.push(ServerUnderTest::start_at(&data, i == 0, &args).await?);
        }
        println!("a cluster of {cluster} servers on {}", nats.url);
        Ok(Nodes {
            servers,
            data,
            nats: Some((nats, store)),
        })
    }

    /// The address of server `i`.
    pub fn addr(&self, i: usize) -> SocketAddr {
        self.servers[i].addr
    }

    /// How many servers.
    pub fn len(&self) -> usize {
        self.servers.len()
    }

    /// Stops a server and starts it again on the same port: the one alone,
    /// or the node that owns the graph, started again once another node
    /// has taken the graph over (as a dead owner's replacement would).
    ///
    /// # Errors
    /// A server cannot be started again, or no node took the graph over.
    pub async fn restart(&mut self, how: Stop) -> anyhow::Result<Restarted> {
        if self.nats.is_none() {
            self.servers[0].restart(how).await?;
            return Ok(Restarted {
                node: 0,
                takeover: None,
            });
        }
        let owner = self.owner(None).await?;
        let stopped = Instant::now();
        self.servers[owner].stop_with(how).await;
        let next = self.owner(Some(owner)).await?;
        let takeover = stopped.elapsed();
        println!(
            "node n{owner} stopped; n{next} owns the graph after {} ms",
            takeover.as_millis()
        );
        self.servers[owner].start_again().await?;
        Ok(Restarted {
            node: owner,
            takeover: Some(takeover),
        })
    }

    /// The node that owns a graph (the soak's only one), other than
    /// `not`, as its `/metrics` say: polled until one does.
    async fn owner(&self, not: Option<usize>) -> anyhow::Result<usize> {
        let deadline = Instant::now() + TAKEOVER;
        loop {
            for (i, server) in self.servers.iter().enumerate() {
                if Some(i) == not {
                    continue;
                }
                let Ok(text) = gitmind_bench::metrics::get(server.addr, "/metrics").await else {
                    continue;
                };
                let owned = text
                    .lines()
                    .find_map(|l| l.strip_prefix("gitmind_cluster_graphs_owned "))
                    .and_then(|v| v.trim().parse::<f64>().ok());
                if owned.is_some_and(|n| n >= 1.0) {
                    return Ok(i);
                }
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "no node owned the graph within {TAKEOVER:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops every server (SIGTERM, each commits what is queued).
    pub async fn stop(&mut self) {
        for server in &mut self.servers {
            server.stop().await;
        }
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        if let Some((_, store)) = &self.nats {
            let _ = std::fs::remove_dir_all(store);
        }
    }
}
