//! The server under test: a fresh `gitmind-server` from the same build,
//! with its own data directory, or one already running.

use std::path::PathBuf;
use std::process::Stdio;

use anyhow::{bail, Context as _};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// How to stop a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// SIGTERM: it commits what is queued and closes every connection.
    Graceful,
    /// SIGKILL: a crash; only what was committed survives.
    Kill,
}

/// A server under test.
pub struct ServerUnderTest {
    /// `host:port` to connect to.
    pub addr: std::net::SocketAddr,
    /// Its process id, for memory and CPU.
    pub pid: u32,
    child: Option<Child>,
    /// Keeps the data directory alive (and removes it) for a started server.
    pub data: Option<PathBuf>,
    /// The arguments it was started with.
    pub args: Vec<String>,
}

impl ServerUnderTest {
    /// Starts `gitmind-server` from the same build directory as this
    /// program, on a free port with a fresh data directory.
    ///
    /// # Errors
    /// When the binary is missing or does not report its address.
    pub async fn start(extra_args: &[String]) -> anyhow::Result<Self> {
        let data = std::env::temp_dir().join(format!(
            "gitmind-load-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        Self::start_at(&data, true, extra_args).await
    }

    /// Starts `gitmind-server` from the same build directory as this
    /// program, on a free port, on the data directory `data`, which it
    /// removes when dropped if `owned` (several servers of a cluster
    /// share one).
    ///
    /// # Errors
    /// When the binary is missing or does not report its address.
    pub async fn start_at(
        data: &std::path::Path,
        owned: bool,
        extra_args: &[String],
    ) -> anyhow::Result<Self> {
        let binary = std::env::current_exe()?.with_file_name("gitmind-server");
        if !binary.exists() {
            bail!(
                "{} not found: build it first (cargo build --release -p gitmind-server)",
                binary.display()
            );
        }
        let mut args = vec![
            "--port".to_owned(),
            "0".to_owned(),
            "--print-addr".to_owned(),
            "--data-dir".to_owned(),
        ];
        args.push(data.display().to_string());
        args.extend(extra_args.iter().cloned());
        Self::spawn(&binary, args, owned.then(|| data.to_owned())).await
    }

    /// Stops a server this program started (see [`Stop`]) and starts it
    /// again on the same data and port.
    ///
    /// # Errors
    /// When it cannot be stopped or started again.
    pub async fn restart(&mut self, how: Stop) -> anyhow::Result<()> {
        self.stop_with(how).await;
        self.start_again().await
    }

    /// Starts a server this program started and stopped again, with the
    /// same arguments, data and port.
    ///
    /// # Errors
    /// When it cannot be started.
    pub async fn start_again(&mut self) -> anyhow::Result<()> {
        let exe = std::env::current_exe()?.with_file_name("gitmind-server");
        let mut args = self.args.clone();
        if let Some(i) = args.iter().position(|a| a == "--port") {
            args[i + 1] = self.addr.port().to_string();
        }
        let restarted = Self::spawn(&exe, args, self.data.take()).await?;
        *self = restarted;
        Ok(())
    }

    async fn spawn(
        binary: &std::path::Path,
        args: Vec<String>,
        data: Option<PathBuf>,
    ) -> anyhow::Result<Self> {
        let mut child = Command::new(binary)
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(std::time::Duration::from_secs(60), lines.next_line())
            .await
            .context("the server did not report its address within 60 s")??
            .context("the server exited before reporting its address")?;
        let addr = line
            .trim()
            .parse()
            .with_context(|| format!("unexpected first line {line:?}"))?;
        let pid = child.id().context("no pid")?;
        Ok(ServerUnderTest {
            addr,
            pid,
            child: Some(child),
            data,
            args,
        })
    }

    /// Attaches to a server already running.
    pub fn attach(addr: std::net::SocketAddr, pid: u32) -> Self {
        ServerUnderTest {
            addr,
            pid,
            child: None,
            data: None,
            args: Vec::new(),
        }
    }

    /// Stops a server this program started (SIGTERM, then waits).
    pub async fn stop(&mut self) {
        self.stop_with(Stop::Graceful).await;
    }

    /// Stops a server this program started, and waits for it to exit.
    pub async fn stop_with(&mut self, how: Stop) {
        if let Some(mut child) = self.child.take() {
            if let Some(pid) = child.id() {
                let signal = match how {
                    Stop::Graceful => "-TERM",
                    Stop::Kill => "-KILL",
                };
                let _ = std::process::Command::new("kill")
                    .arg(signal)
                    .arg(pid.to_string())
                    .status();
            }
            if tokio::time::timeout(std::time::Duration::from_secs(15), child.wait())
                .await
                .is_err()
            {
                let _ = child.kill().await;
            }
        }
    }
}

impl Drop for ServerUnderTest {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.start_kill();
        }
        if let Some(data) = &self.data {
            let _ = std::fs::remove_dir_all(data);
        }
    }
}
