//! `gitmind-server`: serves Gitmind live. With no arguments it listens on
//! 127.0.0.1:7432 and keeps its data in `./gitmind-data`.

use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use gitmind_server::config::{AcceptMode, IoBackend};
use gitmind_server::{Config, Server};
use tokio::signal::unix::{signal, SignalKind};

/// mimalloc (version 2, see the workspace's `Cargo.toml`) serves every
/// allocation of the server's own code: per change the graph owner
/// allocates and frees a few dozen small blocks, for which glibc's
/// allocator took nearly twice the instructions (perf-reports/owner-19.md).
/// C libraries (libgit2, zstd) keep glibc's `malloc`.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The Gitmind live server: real-time collaboration on knowledge graphs stored in git.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// A TOML file with any of the settings below (flags win over it).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long)]
    addr: Option<IpAddr>,
    /// Port to listen on (0: any free port).
    #[arg(long)]
    port: Option<u16>,
    /// Serve a non-loopback address although authentication is off.
    #[arg(long)]
    insecure_open: bool,
    /// Number of shards (0: one per core).
    #[arg(long)]
    shards: Option<usize>,
    /// How connections are spread over shards.
    #[arg(long, value_enum)]
    accept: Option<AcceptMode>,
    /// What the shards do socket I/O with: epoll, or io_uring (a server
    /// built with the `uring` feature, Linux; TLS stays on epoll).
    #[arg(long, value_enum)]
    io: Option<IoBackend>,
    /// Directory of the git repository.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Do not fsync commits (faster, loses the last changes on power loss).
    #[arg(long)]
    no_fsync: bool,
    /// Maximum connections before new ones are refused with 429.
    #[arg(long)]
    max_connections: Option<usize>,
    /// Frame size limit in bytes.
    #[arg(long)]
    max_frame_bytes: Option<usize>,
    /// Outgoing queue limit per session in bytes (slow consumers past it).
    #[arg(long)]
    max_queue_bytes: Option<usize>,
    /// Heartbeat interval in milliseconds.
    #[arg(long)]
    heartbeat_ms: Option<u64>,
    /// A graph with no session and nothing on its way to git is released
    /// after this many milliseconds.
    #[arg(long)]
    graph_idle_unload_ms: Option<u64>,
    /// `gonzai.suggestion` asks answered per session per second.
    #[arg(long)]
    gonzai_asks_per_second: Option<u32>,
    /// `false`: no `gonzai.discover`, Gonzai off the commit path.
    #[arg(long)]
    gonzai_discoveries: Option<bool>,
    /// Turn authentication on with the HS256 secret in this file
    /// (docs/security.md).
    #[arg(long, env = "GITMIND_JWT_SECRET_FILE")]
    jwt_secret_file: Option<PathBuf>,
    /// Turn authentication on with this RS256 or Ed25519 public key (PEM);
    /// may be repeated.
    #[arg(long)]
    jwt_public_key: Vec<PathBuf>,
    /// Turn authentication on with the public keys of this JWKS file.
    #[arg(long)]
    jwks_file: Option<PathBuf>,
    /// The `aud` every token must name.
    #[arg(long)]
    jwt_audience: Option<String>,
    /// The `iss` every token must name.
    #[arg(long)]
    jwt_issuer: Option<String>,
    /// A browser origin allowed besides the server's own (`*`: any); may be
    /// repeated.
    #[arg(long)]
    allowed_origin: Vec<String>,
    /// A host name clients may use besides loopback ones; may be repeated.
    #[arg(long)]
    allowed_host: Vec<String>,
    /// TLS certificate chain (PEM, the server's certificate first); with
    /// --tls-key the port speaks only TLS (wss://, https://). SIGHUP reloads
    /// the certificate and key.
    #[arg(long)]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM: PKCS#8, PKCS#1 or SEC1), with --tls-cert.
    #[arg(long)]
    tls_key: Option<PathBuf>,
    /// Check the repository in the data directory (every graph loads; each
    /// commit's journal agrees with its tree), print a report and exit:
    /// 0 when it is sound, 1 when not. Do not run it on a live server's data.
    #[arg(long)]
    verify: bool,
    /// Join a cluster of servers sharing the graphs through this NATS
    /// server (JetStream on), e.g. nats://127.0.0.1:4222 (docs/scale-out.md).
    #[arg(long)]
    cluster: Option<String>,
    /// This server's name in the cluster (with --cluster).
    #[arg(long)]
    node: Option<String>,
    /// Print the address served on this line of stdout once listening
    /// (for scripts that start the server on port 0).
    #[arg(long)]
    print_addr: bool,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let mut config = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?
        }
        None => Config::default(),
    };
    macro_rules! set {
        ($($field:ident),*) => { $( if let Some(v) = args.$field.clone() { config.$field = v; } )* };
    }
    set!(
        addr,
        port,
        shards,
        accept,
        io,
        data_dir,
        max_connections,
        max_frame_bytes,
        max_queue_bytes,
        heartbeat_ms,
        graph_idle_unload_ms,
        gonzai_asks_per_second,
        gonzai_discoveries
    );
    if let Some(cert) = &args.tls_cert {
        config.tls_cert = Some(cert.clone());
    }
    if let Some(key) = &args.tls_key {
        config.tls_key = Some(key.clone());
    }
    if let Some(url) = &args.cluster {
        config.cluster = Some(url.clone());
    }
    if let Some(node) = &args.node {
        config.node = Some(node.clone());
    }
    config.insecure_open |= args.insecure_open;
    let auth = &mut config.auth;
    if let Some(path) = args.jwt_secret_file {
        auth.jwt_secret_file = Some(path);
    }
    auth.jwt_public_key_files.extend(args.jwt_public_key);
    if let Some(path) = args.jwks_file {
        auth.jwks_file = Some(path);
    }
    if let Some(audience) = args.jwt_audience {
        auth.audience = Some(audience);
    }
    if let Some(issuer) = args.jwt_issuer {
        auth.issuer = Some(issuer);
    }
    auth.allowed_origins.extend(args.allowed_origin);
    auth.allowed_hosts.extend(args.allowed_host);
    config.fsync &= !args.no_fsync;

    if args.verify {
        return verify(&config.data_dir);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // SIGHUP is caught from before the start: one that comes while the
    // server starts must not end the process (its default action).
    let mut hangup = {
        let _runtime = runtime.enter();
        signal(SignalKind::hangup())?
    };
    let server = Server::start(config)?;
    if args.print_addr {
        println!("{}", server.local_addr());
    }
    runtime.block_on(async {
        let mut term = signal(SignalKind::terminate())?;
        let mut interrupt = signal(SignalKind::interrupt())?;
        loop {
            tokio::select! {
                _ = interrupt.recv() => break,
                _ = term.recv() => break,
                _ = hangup.recv() => {
                    tracing::info!("SIGHUP: reloading the TLS certificate");
                    // A failure is logged there and changes nothing.
                    let _ = server.reload_tls();
                }
            }
        }
        anyhow::Ok(())
    })?;
    tracing::info!("shutting down");
    server.shutdown();
    tracing::info!("stopped");
    Ok(())
}

/// `--verify`: checks the repository and reports.
fn verify(data_dir: &std::path::Path) -> anyhow::Result<()> {
    match gitmind_server::persist::verify(data_dir) {
        Ok(report) => {
            for g in &report.graphs {
                println!(
                    "{}: ok, epoch {}, seq {}, {} nodes, {} edges, {} commits and {} changes checked",
                    g.graph, g.epoch, g.seq, g.nodes, g.edges, g.commits, g.changes
                );
            }
            println!(
                "{} graphs verified in {}",
                report.graphs.len(),
                data_dir.display()
            );
            Ok(())
        }
        Err(e) => {
            eprintln!("gitmind-server: {} is not sound: {e}", data_dir.display());
            std::process::exit(1);
        }
    }
}
