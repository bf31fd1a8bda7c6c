//! A `nats-server` with JetStream on a free loopback port, for the
//! cluster's end-to-end tests and the soak test's `--cluster` mode
//! (docs/scale-out.md). Debian's `nats-server` package provides it;
//! `.ci/run` installs it.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

/// How long `nats-server` may take to listen.
const START: Duration = Duration::from_secs(60);

/// `nats-server` on the `PATH` (or where Debian puts it).
pub fn binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|dir| dir.join("nats-server"))
        .find(|p| p.is_file())
}

/// A running `nats-server -js`, killed when dropped.
#[derive(Debug)]
pub struct Nats {
    _child: Child,
    /// `nats://127.0.0.1:PORT`.
    pub url: String,
}

impl Nats {
    /// Starts `binary` on a free loopback port with its JetStream store in
    /// `dir`, and waits until it listens.
    ///
    /// # Errors
    /// It cannot be started, or does not listen within a minute.
    pub async fn start(binary: &Path, dir: &Path) -> std::io::Result<Nats> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let child = Command::new(binary)
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(dir.join("jetstream"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let deadline = tokio::time::Instant::now() + START;
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            if tokio::time::Instant::now() >= deadline {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "nats-server did not listen within a minute",
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(Nats {
            _child: child,
            url: format!("nats://127.0.0.1:{port}"),
        })
    }
}
