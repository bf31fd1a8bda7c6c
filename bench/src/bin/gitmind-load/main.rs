//! `gitmind-load`: the load generator that reproduces Gitmind live's
//! performance targets (docs/architecture.md, "Measured, not assumed").
//!
//! By default it starts a fresh `gitmind-server` from the same build with
//! its own data directory and measures that process; `--server URL
//! --server-pid PID` measures one already running. Every run prints a
//! summary and writes JSON and Markdown (with SVG plots) into
//! `perf-reports/`. Latency is measured from the time a message was
//! *scheduled* to be sent, so a stall in the generator or the server cannot
//! hide (no coordinated omission).
//!
//! One module per scenario: `idle`, `fanout`, `ramp`, `reconnect`,
//! `hostile`, `viewports` and `peers` (the fan-out against other servers);
//! `fleet` holds the writers and subscribers that fan-out, ramp, hostile
//! and peers share,
//! `clients` what every scenario does with its connections, and `result`
//! the JSON result they all write. This file is the command line.

mod clients;
mod fanout;
mod fleet;
mod hostile;
mod idle;
mod peers;
mod ramp;
mod reconnect;
mod result;
mod suggest;
mod viewports;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use gitmind_bench::conn::Codec;
use gitmind_bench::machine::Machine;
use gitmind_bench::procstat::CpuMeter;
use gitmind_bench::report::{self, Markdown};
use gitmind_bench::server::ServerUnderTest;

#[derive(Debug, Parser)]
#[command(version, about = "Load generator for Gitmind live")]
struct Args {
    /// Codec of every connection (default: half binary, half JSON).
    #[arg(long, global = true, value_enum)]
    codec: Option<Codec>,
    /// How long to measure, in seconds.
    #[arg(long, global = true, default_value_t = 30)]
    duration: u64,
    /// Also write the JSON result here.
    #[arg(long, global = true)]
    json: Option<std::path::PathBuf>,
    /// Measure this running server (`ws://HOST:PORT`) instead of starting one.
    #[arg(long, global = true, requires = "server_pid")]
    server: Option<String>,
    /// More nodes of the same cluster as `--server` (`ws://HOST:PORT`,
    /// docs/scale-out.md); may be repeated. Subscribers and writers are
    /// spread over `--server` and these in turn; memory and CPU are
    /// `--server`'s alone.
    #[arg(long, global = true, requires = "server")]
    also_server: Vec<String>,
    /// `--server` and `--also-server`, parsed.
    #[arg(skip)]
    nodes: Vec<std::net::SocketAddr>,
    /// The process id of `--server`, for its memory and CPU.
    #[arg(long, global = true)]
    server_pid: Option<u32>,
    /// Extra arguments for the server this program starts.
    #[arg(long, global = true, allow_hyphen_values = true)]
    server_args: Vec<String>,
    /// Authenticate: the server this program starts verifies HS256 tokens
    /// with the secret in this file, and every client presents one
    /// (`fanout`, `ramp`).
    #[arg(long, global = true)]
    jwt_secret_file: Option<std::path::PathBuf>,
    /// With `--jwt-secret-file`: the read prefixes in the subscribers'
    /// tokens (they then see the graph through a filtered view); may be
    /// repeated.
    #[arg(long, global = true, requires = "jwt_secret_file")]
    read_prefix: Vec<String>,
    /// The secret read from `--jwt-secret-file`.
    #[arg(skip)]
    secret: Option<Vec<u8>>,
    /// Report file name (default: `load-SCENARIO`).
    #[arg(long, global = true)]
    report: Option<String>,
    /// Generator threads that receive (writers send on a thread of their own).
    #[arg(long, global = true, default_value_t = 2)]
    threads: usize,
    /// Subscribers show a `focus` on a writer's node (subscriber i on
    /// writer i mod writers), so every change is a Gonzai discovery for
    /// some of them: the cost of Gonzai on the fan-out path.
    #[arg(long, global = true)]
    gonzai_focus: bool,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Debug, Clone, Subcommand)]
enum Scenario {
    /// Open N connections and hold them: memory per connection, CPU, idle bandwidth.
    Idle {
        /// Connections to hold.
        #[arg(long, default_value_t = 10_000)]
        connections: usize,
        /// Connections per graph (sessions in one graph see each other's presence).
        #[arg(long, default_value_t = 100)]
        per_graph: usize,
    },
    /// W writers at R updates/s each, S subscribers; write-to-delivery latency.
    Fanout(fanout::Workload),
    /// The `fanout` workload against another server, in its protocol
    /// (`bench/peers/`): needs `--server ws://HOST:PORT --server-pid PID`.
    Peers {
        /// The server's protocol.
        #[arg(long, value_enum)]
        protocol: gitmind_bench::ysync::Protocol,
        #[command(flatten)]
        workload: fanout::Workload,
    },
    /// Raise the rate step by step until p99 passes 100 ms or anything is lost.
    Ramp {
        /// Subscribers.
        #[arg(long, default_value_t = 100)]
        subscribers: usize,
        /// Writers.
        #[arg(long, default_value_t = 10)]
        writers: usize,
        /// First total rate (updates/s over all writers).
        #[arg(long, default_value_t = 500.0)]
        start: f64,
        /// Seconds per step.
        #[arg(long, default_value_t = 5)]
        step: u64,
    },
    /// All clients lose their connection at once (server restart); time to resume.
    Reconnect {
        /// Clients.
        #[arg(long, default_value_t = 1000)]
        clients: usize,
    },
    /// Honest fan-out under sync floods, graph-name floods, junk frames,
    /// slowloris and presence storms; a verdict per target (issue #13).
    Hostile(hostile::Options),
    /// Sessions each with a bbox of its own over the Debian graph laid out
    /// in the plane, writers moving nodes: region fan-out (issue #17).
    Viewports(viewports::Options),
    /// Link suggestions on the Debian graph (issue 18): writes
    /// `perf-reports/gonzai.md`.
    Suggest {
        /// The dataset.
        #[arg(long, default_value_os_t = gitmind_testkit::default_dataset())]
        dataset: std::path::PathBuf,
        /// The split's seed.
        #[arg(long, default_value_t = 20261207)]
        seed: u64,
        /// Held-out edges (one per source).
        #[arg(long, default_value_t = 1000)]
        queries: usize,
        /// Tuning: no server; the model is built in process from the
        /// training graph and asked directly, the figures printed only.
        #[arg(long)]
        offline: bool,
        /// With `--offline`: fit the weights on the training graph from
        /// this many of its own links hidden (0: the shipped weights).
        #[arg(long, default_value_t = 0)]
        fit: usize,
        /// With `--fit`: fit only the weights from this feature on, the
        /// others kept as shipped (0: all).
        #[arg(long, default_value_t = 0)]
        fit_from: usize,
        /// Train on hidden links of this type only (the kind the
        /// evaluation asks for), any type when empty.
        #[arg(long, default_value = "depends-on")]
        train_type: String,
        /// With `--offline`: write every candidate's ranking inputs, of the
        /// held-out queries to `PATH.eval` and of links hidden in the
        /// training graph to `PATH.train`, for `bench/gonzai-ranker/train.py`.
        #[arg(long)]
        dump: Option<String>,
        /// With `--dump`: this many links hidden in the training graph.
        #[arg(long, default_value_t = 10_000)]
        dump_links: usize,
    },
}

fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    if let Some(path) = &args.jwt_secret_file {
        let secret =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        args.secret = Some(secret.trim_end().as_bytes().to_vec());
        args.server_args.push("--jwt-secret-file".into());
        args.server_args.push(path.display().to_string());
    }
    if matches!(args.scenario, Scenario::Suggest { .. }) {
        // The evaluation asks one after another, faster than a person.
        args.server_args.push("--gonzai-asks-per-second".into());
        args.server_args.push("1000000".into());
    }
    if matches!(args.scenario, Scenario::Hostile(_)) {
        // Flooded graph names are released after this idle time: short, so
        // the run can see it happen (hostile::GRAPH_IDLE).
        args.server_args.push("--graph-idle-unload-ms".into());
        args.server_args
            .push(hostile::GRAPH_IDLE.as_millis().to_string());
    }
    // 10,000 connections need more than the usual 1,024 descriptors.
    if let Ok((_, hard)) = rlimit::Resource::NOFILE.get() {
        let _ = rlimit::Resource::NOFILE.set(hard, hard);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    if let Scenario::Suggest {
        dataset,
        seed,
        queries,
        offline: true,
        fit,
        train_type,
        fit_from,
        dump,
        dump_links,
    } = &args.scenario
    {
        let train = suggest::Training {
            fit: *fit,
            fit_from: *fit_from,
            edge_type: Some(train_type.clone()).filter(|t| !t.is_empty()),
            dump: dump.clone().map(|path| (path, *dump_links)),
        };
        return suggest::offline(dataset, *seed, *queries, &train);
    }
    let parse = |url: &str| -> anyhow::Result<std::net::SocketAddr> {
        url.trim_start_matches("ws://")
            .trim_end_matches('/')
            .parse()
            .context("--server and --also-server must be ws://HOST:PORT")
    };
    if matches!(args.scenario, Scenario::Peers { .. }) {
        anyhow::ensure!(
            args.server.is_some(),
            "peers measures a server already running: --server ws://HOST:PORT --server-pid PID"
        );
    }
    let mut server = match (&args.server, args.server_pid) {
        (Some(url), Some(pid)) => ServerUnderTest::attach(parse(url)?, pid),
        _ => ServerUnderTest::start(&args.server_args).await?,
    };
    let mut args = args;
    args.nodes = std::iter::once(Ok(server.addr))
        .chain(args.also_server.iter().map(|u| parse(u)))
        .collect::<anyhow::Result<_>>()?;
    if let Scenario::Suggest {
        dataset,
        seed,
        queries,
        ..
    } = &args.scenario
    {
        let md = suggest::run(&server, dataset, *seed, *queries).await?;
        let path = report::reports_dir()
            .join(args.report.as_deref().unwrap_or("gonzai").to_string() + ".md");
        std::fs::write(&path, &md)?;
        println!("{md}\nreport: {}", path.display());
        server.stop().await;
        return Ok(());
    }
    let machine = Machine::describe();
    let generator = CpuMeter::start(std::process::id());
    let (name, mut result, mut md) = match args.scenario.clone() {
        Scenario::Idle {
            connections,
            per_graph,
        } => idle::run(&args, &server, connections, per_graph).await?,
        Scenario::Fanout(workload) => fanout::run(&args, &server, workload).await?,
        Scenario::Peers { protocol, workload } => {
            peers::run(&args, &server, protocol, workload).await?
        }
        Scenario::Ramp {
            subscribers,
            writers,
            start,
            step,
        } => ramp::run(&args, &server, subscribers, writers, start, step).await?,
        Scenario::Reconnect { clients } => reconnect::run(&args, &mut server, clients).await?,
        Scenario::Hostile(options) => hostile::run(&args, &server, &options).await?,
        Scenario::Viewports(options) => viewports::run(&args, &server, &options).await?,
        Scenario::Suggest { .. } => unreachable!("handled above"),
    };
    result.generator_cpu_percent = generator.percent();
    result.generator_saturated |= result.generator_cpu_percent > 90.0 * args.threads as f64;
    if result.codec.is_empty() {
        result.codec = args.codec.map_or("mixed".into(), |c| c.name().to_owned());
    }
    let mut report = Markdown::new(&format!("gitmind-load {name}"), &machine);
    report.push(&std::mem::take(&mut md));
    report.push(&format!(
        "\ngenerator CPU: {:.1}% of one core{}\n",
        result.generator_cpu_percent,
        if result.generator_saturated {
            " (SATURATED: the figures are bounded by the generator)"
        } else {
            ""
        }
    ));
    let dir = report::reports_dir();
    let file = args
        .report
        .clone()
        .unwrap_or_else(|| format!("load-{name}"));
    report.write(&dir, &file, &result, args.json.as_deref())?;
    println!("{}", serde_json::to_string_pretty(&result)?);
    println!("report: {}", dir.join(format!("{file}.md")).display());
    server.stop().await;
    Ok(())
}
