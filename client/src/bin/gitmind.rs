//! `gitmind`: watch and change Gitmind live graphs from a terminal.
//!
//! Every mutation command waits for its outcome and exits non-zero with the
//! reason when the change is rolled back.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use clap::{Args, Parser, Subcommand};
use gitmind_client::dataset::{Item, Reader};
use gitmind_client::import::Importer;
use gitmind_client::{Client, ClientConfig, Codec, Event, Outcome, State, TokenSource};
use gitmind_schema::message::{
    Around, EdgeCreate, EdgeDelete, EdgeUpdate, NodeCreate, NodeDelete, NodeUpdate, PresenceStatus,
    Query, RegionFilter,
};
use gitmind_schema::model::{Edge, EdgeSet, Node, NodeSet, PropValue, TextEdits};
use gitmind_schema::ot::TextOp;
use gitmind_schema::{json, Body, Envelope};

/// Watch and change Gitmind live graphs.
#[derive(Debug, Parser)]
#[command(version, propagate_version = true)]
struct Cli {
    /// The server.
    #[arg(
        long,
        global = true,
        default_value = "ws://127.0.0.1:7432",
        env = "GITMIND_SERVER"
    )]
    server: String,
    /// The user to act as (local mode).
    #[arg(long, global = true, env = "GITMIND_USER")]
    user: Option<String>,
    /// The bearer token, when the server authenticates (docs/security.md).
    #[arg(long, global = true, env = "GITMIND_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// The wire codec.
    #[arg(long, global = true, value_enum, default_value = "bin")]
    codec: Codec,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show live events, presence and connection state.
    Watch {
        /// The graph.
        graph: String,
        /// One JSON envelope per line instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        region: RegionArgs,
    },
    /// Print a live query's results, and again whenever they change.
    Query(QueryArgs),
    /// Create, change or delete nodes.
    #[command(subcommand)]
    Node(NodeCommand),
    /// Create, change or delete edges.
    #[command(subcommand)]
    Edge(EdgeCommand),
    /// Apply a text operation to a node's content, e.g. '[5, "abc", -3]'.
    Edit {
        /// The graph.
        graph: String,
        /// The node.
        id: String,
        /// The operation (docs/protocol.md 4.2): retain n, insert "text", delete -n.
        op: String,
    },
    /// Print the graph as JSON: {epoch, seq, nodes, edges}.
    Export {
        /// The graph.
        graph: String,
    },
    /// Link suggestions for a node, best first (Gonzai, protocol 9).
    Suggest {
        /// The graph.
        graph: String,
        /// The node.
        node: String,
        /// At most this many (1 to 100).
        #[arg(long, default_value_t = 10)]
        limit: u32,
        /// One JSON object per suggestion instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Import JSON Lines of {"node": ...} and {"edge": ...} (plain or .zst).
    Import {
        /// The graph.
        graph: String,
        /// The file.
        file: PathBuf,
    },
}

/// What `watch` watches: with any of these, only the nodes that match
/// every one given (one region, docs/protocol.md 7) and the edges with an
/// end among them.
#[derive(Debug, Args)]
struct RegionArgs {
    /// Only the nodes inside this box: x0,y0,x1,y1.
    #[arg(long, value_name = "X0,Y0,X1,Y1", allow_hyphen_values = true)]
    bbox: Option<String>,
    /// Only this node and its neighbours up to DEPTH edges away (1 to 3).
    #[arg(long, value_name = "ID:DEPTH")]
    around: Option<String>,
    /// Only the nodes whose id starts with this.
    #[arg(long)]
    prefix: Option<String>,
}

impl RegionArgs {
    /// The region filter, or `None` to watch the whole graph.
    fn filter(&self) -> anyhow::Result<Option<RegionFilter>> {
        let bbox = match &self.bbox {
            None => None,
            Some(text) => {
                let numbers: Vec<f64> = text
                    .split(',')
                    .map(|v| v.trim().parse::<f64>())
                    .collect::<Result<_, _>>()
                    .with_context(|| format!("--bbox {text:?}: four numbers x0,y0,x1,y1"))?;
                let [x0, y0, x1, y1] = numbers[..] else {
                    bail!("--bbox {text:?}: four numbers x0,y0,x1,y1");
                };
                Some([x0, y0, x1, y1])
            }
        };
        let around = match &self.around {
            None => None,
            Some(text) => {
                let Some((id, depth)) = text.rsplit_once(':') else {
                    bail!("--around {text:?}: write ID:DEPTH, e.g. pkg:git:2");
                };
                let depth = depth
                    .parse::<u32>()
                    .ok()
                    .filter(|d| (1..=3).contains(d))
                    .with_context(|| format!("--around {text:?}: DEPTH is 1 to 3"))?;
                Some(Around {
                    id: id.to_owned(),
                    depth,
                })
            }
        };
        if bbox.is_none() && around.is_none() && self.prefix.is_none() {
            return Ok(None);
        }
        Ok(Some(RegionFilter {
            bbox,
            around,
            prefix: self.prefix.clone(),
            ..RegionFilter::default()
        }))
    }
}

/// `gitmind query`: nodes matching every field given.
#[derive(Debug, Args)]
struct QueryArgs {
    /// The graph.
    graph: String,
    /// Nodes of this kind.
    #[arg(long)]
    kind: Option<String>,
    /// Nodes whose id starts with this.
    #[arg(long)]
    prefix: Option<String>,
    /// Nodes whose label contains this.
    #[arg(long)]
    label_contains: Option<String>,
    /// A property value, key=value (numbers and true/false are typed); repeatable.
    #[arg(long = "prop", value_name = "KEY=VALUE")]
    props: Vec<String>,
    /// Nodes with an edge of this type.
    #[arg(long)]
    edge_type: Option<String>,
    /// At most this many results (the first in id order).
    #[arg(long)]
    limit: Option<u32>,
    /// Print the results once and exit.
    #[arg(long)]
    once: bool,
    /// One JSON `query.results` data per line instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum NodeCommand {
    /// Create a node.
    Add(NodeArgs),
    /// Change a node's fields.
    Set(NodeArgs),
    /// Delete a node and its edges.
    Rm {
        /// The graph.
        graph: String,
        /// The node id.
        id: String,
    },
}

#[derive(Debug, Args)]
struct NodeArgs {
    /// The graph.
    graph: String,
    /// The node id, `prefix:identifier`.
    id: String,
    /// Label.
    #[arg(long)]
    label: Option<String>,
    /// Kind (document, concept, person, project, ...).
    #[arg(long)]
    kind: Option<String>,
    /// Content.
    #[arg(long)]
    content: Option<String>,
    /// Position.
    #[arg(long, allow_hyphen_values = true)]
    x: Option<f64>,
    /// Position.
    #[arg(long, allow_hyphen_values = true)]
    y: Option<f64>,
    /// A property, key=value (numbers and true/false are typed); repeatable.
    /// With `set`, `key=` (empty) removes it.
    #[arg(long = "prop", value_name = "KEY=VALUE")]
    props: Vec<String>,
}

#[derive(Debug, Subcommand)]
enum EdgeCommand {
    /// Create an edge.
    Add(EdgeArgs),
    /// Change an edge's fields.
    Set(EdgeArgs),
    /// Delete an edge.
    Rm {
        /// The graph.
        graph: String,
        /// Source node id.
        source: String,
        /// Edge type, e.g. depends-on.
        #[arg(value_name = "TYPE")]
        edge_type: String,
        /// Target node id.
        target: String,
    },
}

#[derive(Debug, Args)]
struct EdgeArgs {
    /// The graph.
    graph: String,
    /// Source node id.
    source: String,
    /// Edge type, e.g. depends-on.
    #[arg(value_name = "TYPE")]
    edge_type: String,
    /// Target node id.
    target: String,
    /// Confidence, 0 to 1.
    #[arg(long)]
    confidence: Option<f64>,
    /// Why the edge exists.
    #[arg(long)]
    rationale: Option<String>,
    /// The relation holds both ways.
    #[arg(long)]
    bidirectional: Option<bool>,
    /// A property, key=value; repeatable.
    #[arg(long = "prop", value_name = "KEY=VALUE")]
    props: Vec<String>,
}

fn main() {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("gitmind: cannot start: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = runtime.block_on(run(cli)) {
        eprintln!("gitmind: {e:#}");
        let unreachable = e.chain().any(|c| {
            matches!(
                c.downcast_ref::<gitmind_client::client::ClientError>(),
                Some(gitmind_client::client::ClientError::Connect(
                    gitmind_client::transport::TransportError::Unreachable { .. }
                ))
            )
        });
        if unreachable {
            eprintln!("gitmind: is the server running? start it with: cargo run --release -p gitmind-server");
        }
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let connect = |graph: &str| {
        let mut config = ClientConfig::new(cli.server.clone(), graph);
        config.user = cli.user.clone();
        config.token = cli.token.clone().map(TokenSource::fixed);
        config.codec = cli.codec;
        config.connect_attempts = Some(3);
        config
    };
    match &cli.command {
        Command::Watch {
            graph,
            json,
            region,
        } => watch(connect(graph), *json, region.filter()?).await,
        Command::Query(q) => {
            let query = Query {
                kind: q.kind.clone(),
                prefix: q.prefix.clone(),
                label_contains: q.label_contains.clone(),
                props: props(&q.props, false)?
                    .map(|p| p.into_iter().filter_map(|(k, v)| Some((k, v?))).collect()),
                edge_type: q.edge_type.clone(),
                limit: q.limit,
            };
            live_query(connect(&q.graph), query, q.once, q.json).await
        }
        Command::Node(NodeCommand::Add(a)) => {
            let node = Node {
                id: a.id.clone(),
                kind: a.kind.clone(),
                label: a.label.clone(),
                content: a.content.clone(),
                x: a.x,
                y: a.y,
                props: props(&a.props, false)?
                    .map(|p| p.into_iter().filter_map(|(k, v)| Some((k, v?))).collect()),
                ..Node::default()
            };
            mutate(
                connect(&a.graph),
                Body::NodeCreate(NodeCreate {
                    base_seq: None,
                    node,
                    commit: None,
                }),
            )
            .await
        }
        Command::Node(NodeCommand::Set(a)) => {
            let set = NodeSet {
                kind: a.kind.clone(),
                label: a.label.clone(),
                content: a.content.clone(),
                x: a.x,
                y: a.y,
                props: props(&a.props, true)?,
            };
            if set == NodeSet::default() {
                bail!("nothing to set: give --label, --kind, --content, --x, --y or --prop");
            }
            let update = NodeUpdate {
                id: a.id.clone(),
                set: Some(set),
                ..NodeUpdate::default()
            };
            mutate(connect(&a.graph), Body::NodeUpdate(update)).await
        }
        Command::Node(NodeCommand::Rm { graph, id }) => {
            mutate(
                connect(graph),
                Body::NodeDelete(NodeDelete {
                    id: id.clone(),
                    ..NodeDelete::default()
                }),
            )
            .await
        }
        Command::Edge(EdgeCommand::Add(a)) => {
            let edge = Edge {
                source: a.source.clone(),
                edge_type: a.edge_type.clone(),
                target: a.target.clone(),
                confidence: a.confidence,
                rationale: a.rationale.clone(),
                bidirectional: a.bidirectional,
                props: props(&a.props, false)?
                    .map(|p| p.into_iter().filter_map(|(k, v)| Some((k, v?))).collect()),
                ..Edge::default()
            };
            mutate(
                connect(&a.graph),
                Body::EdgeCreate(EdgeCreate {
                    base_seq: None,
                    edge,
                    commit: None,
                }),
            )
            .await
        }
        Command::Edge(EdgeCommand::Set(a)) => {
            let set = EdgeSet {
                confidence: a.confidence,
                rationale: a.rationale.clone(),
                bidirectional: a.bidirectional,
                props: props(&a.props, true)?,
            };
            if set == EdgeSet::default() {
                bail!("nothing to set: give --confidence, --rationale, --bidirectional or --prop");
            }
            let update = EdgeUpdate {
                source: Some(a.source.clone()),
                edge_type: Some(a.edge_type.clone()),
                target: Some(a.target.clone()),
                set: Some(set),
                ..EdgeUpdate::default()
            };
            mutate(connect(&a.graph), Body::EdgeUpdate(update)).await
        }
        Command::Edge(EdgeCommand::Rm {
            graph,
            source,
            edge_type,
            target,
        }) => {
            let delete = EdgeDelete {
                source: Some(source.clone()),
                edge_type: Some(edge_type.clone()),
                target: Some(target.clone()),
                ..EdgeDelete::default()
            };
            mutate(connect(graph), Body::EdgeDelete(delete)).await
        }
        Command::Edit { graph, id, op } => {
            let op: TextOp = serde_json::from_str(op).with_context(|| {
                format!("{op:?} is not a text operation; write e.g. '[5, \"abc\", -3]'")
            })?;
            let update = NodeUpdate {
                id: id.clone(),
                text: Some(TextEdits { content: Some(op) }),
                ..NodeUpdate::default()
            };
            mutate(connect(graph), Body::NodeUpdate(update)).await
        }
        Command::Export { graph } => export(connect(graph)).await,
        Command::Suggest {
            graph,
            node,
            limit,
            json,
        } => suggest(connect(graph), node, *limit, *json).await,
        Command::Import { graph, file } => import(connect(graph), file).await,
    }
}

/// Parses `key=value` properties; with `patch`, `key=` removes the key.
fn props(
    args: &[String],
    patch: bool,
) -> anyhow::Result<Option<BTreeMap<String, Option<PropValue>>>> {
    if args.is_empty() {
        return Ok(None);
    }
    let mut out = BTreeMap::new();
    for arg in args {
        let Some((key, value)) = arg.split_once('=') else {
            bail!("--prop {arg:?}: write key=value");
        };
        let value = match value {
            "" if patch => None,
            "" => {
                bail!("--prop {arg:?}: a value is needed (key= removes a property only with `set`)")
            }
            "true" => Some(PropValue::Bool(true)),
            "false" => Some(PropValue::Bool(false)),
            v => Some(
                v.parse::<f64>()
                    .ok()
                    .filter(|n| n.is_finite())
                    .map_or_else(|| PropValue::String(v.to_owned()), PropValue::Number),
            ),
        };
        out.insert(key.to_owned(), value);
    }
    Ok(Some(out))
}

/// Sends one mutation and reports its outcome.
async fn mutate(config: ClientConfig, body: Body) -> anyhow::Result<()> {
    let (client, _events) = Client::connect(config).await.context("cannot connect")?;
    let outcome = client.mutate(body).await?;
    client.close().await;
    match outcome {
        Outcome::Confirmed(c) => {
            println!("confirmed: seq {} in commit {}", c.seq, c.commit);
            Ok(())
        }
        Outcome::Resolved(c) => {
            let fields: Vec<String> = c
                .conflicts
                .iter()
                .map(|x| format!("{} (seq {} by {})", x.field, x.seq, x.user_id))
                .collect();
            println!(
                "applied at seq {} in commit {}, merged with concurrent changes to {}",
                c.seq,
                c.commit,
                fields.join(", ")
            );
            Ok(())
        }
        Outcome::RolledBack(r) => {
            let reason = serde_json::to_value(r.reason)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            bail!("rolled back ({reason}): {}", r.message)
        }
    }
}

/// Prints events as they come.
async fn watch(
    config: ClientConfig,
    as_json: bool,
    region: Option<RegionFilter>,
) -> anyhow::Result<()> {
    let graph = config.graph.clone();
    let (client, mut events) = Client::connect(config).await.context("cannot connect")?;
    if let Some(filter) = region {
        client.subscribe_region("watch", filter).await?;
        client.unsubscribe_region("all").await?;
    }
    let mut state = client.state();
    let (user, session) = client.identity();
    if !as_json {
        let replica = client.replica();
        println!(
            "watching {graph} as {user} ({session}): {} nodes, {} edges at seq {}",
            replica.nodes().count(),
            replica.edges().count(),
            replica.server_seq()
        );
    }
    let mut out = std::io::stdout();
    loop {
        tokio::select! {
            changed = state.changed() => {
                if changed.is_err() {
                    break;
                }
                let now = state.borrow_and_update().clone();
                if !as_json {
                    match &now {
                        State::Reconnecting { attempt, next_attempt, reason } => {
                            let wait = next_attempt.saturating_duration_since(tokio::time::Instant::now());
                            println!("-- connection lost ({reason}); attempt {attempt} in {:.1} s", wait.as_secs_f64());
                        }
                        State::Connected { .. } | State::Connecting | State::Resyncing => {}
                        State::Closed { reason } => println!("-- closed: {reason}"),
                    }
                }
                if let State::Closed { reason } = now {
                    bail!("connection closed: {reason}");
                }
            }
            event = events.next() => {
                let Some(event) = event else { break };
                let line = match (&event, as_json) {
                    (Event::Change(e) | Event::Presence(e) | Event::Region(e) | Event::Gonzai(e), true) => String::from_utf8_lossy(&json::encode(e)).into_owned(),
                    (Event::Synced { mode, seq }, true) => format!("{{\"synced\":{{\"mode\":{},\"seq\":{seq}}}}}", serde_json::to_string(mode)?),
                    (Event::Error(err), true) => serde_json::to_string(err)?,
                    (Event::Query(r), true) => serde_json::to_string(r)?,
                    (Event::Reconnecting { attempt, delay, reason }, true) => serde_json::json!({
                        "reconnecting": {"attempt": attempt, "delayMs": delay.as_millis(), "reason": reason}
                    })
                    .to_string(),
                    (_, false) => describe(&event),
                };
                if !line.is_empty() {
                    writeln!(out, "{line}")?;
                    out.flush()?;
                }
            }
        }
    }
    Ok(())
}

/// Prints a live query's results, then each change to them.
async fn live_query(
    config: ClientConfig,
    query: Query,
    once: bool,
    as_json: bool,
) -> anyhow::Result<()> {
    let (client, mut events) = Client::connect(config).await.context("cannot connect")?;
    // Only the answers are wanted, not the graph's events.
    client.unsubscribe_region("all").await?;
    client.subscribe_query("q", query).await?;
    let mut out = std::io::stdout();
    let mut first = true;
    while let Some(event) = events.next().await {
        match event {
            Event::Query(r) => {
                if as_json {
                    writeln!(out, "{}", serde_json::to_string(&r)?)?;
                } else if first {
                    writeln!(out, "{} results at seq {}", r.results.len(), r.seq)?;
                    for id in &r.results {
                        writeln!(out, "  {id}")?;
                    }
                } else {
                    for id in &r.added {
                        writeln!(out, "[{}] + {id}", r.seq)?;
                    }
                    for id in &r.removed {
                        writeln!(out, "[{}] - {id}", r.seq)?;
                    }
                }
                out.flush()?;
                first = false;
                if once {
                    break;
                }
            }
            Event::Error(err) => bail!(
                "the server refused the query ({:?}): {}",
                err.code,
                err.message
            ),
            _ => {}
        }
    }
    client.close().await;
    Ok(())
}

/// One line for a person.
fn describe(event: &Event) -> String {
    let who = |e: &Envelope| e.user_id.clone().unwrap_or_default();
    match event {
        Event::Synced { mode, seq } => format!("-- in sync at seq {seq} ({mode:?})").to_lowercase(),
        Event::Change(e) => {
            let seq = e.seq.unwrap_or(0);
            let what = match &e.body {
                Body::NodeCreate(c) => format!(
                    "created node {} {:?}",
                    c.node.id,
                    c.node.label.as_deref().unwrap_or("")
                ),
                Body::NodeUpdate(u) => {
                    let mut fields: Vec<String> = Vec::new();
                    if let Some(set) = &u.set {
                        let v = serde_json::to_value(set).unwrap_or_default();
                        fields.extend(
                            v.as_object()
                                .into_iter()
                                .flatten()
                                .map(|(k, v)| format!("{k}={v}")),
                        );
                    }
                    if u.text.is_some() {
                        fields.push("edited the text".into());
                    }
                    format!("changed node {}: {}", u.id, fields.join(", "))
                }
                Body::NodeDelete(d) => format!("deleted node {} and its edges", d.id),
                Body::EdgeCreate(c) => format!(
                    "linked {} -[{}]-> {}",
                    c.edge.source, c.edge.edge_type, c.edge.target
                ),
                Body::EdgeUpdate(u) => format!("changed edge {}", u.edge_id().unwrap_or_default()),
                Body::EdgeDelete(d) => format!("deleted edge {}", d.edge_id().unwrap_or_default()),
                Body::BatchUpdate(b) => format!("applied a batch of {} changes", b.ops.len()),
                other => other.message_type().name().to_owned(),
            };
            format!("[{seq}] {}: {what}", who(e))
        }
        Event::Presence(e) => match &e.body {
            Body::UserPresence(p) => match p.status {
                PresenceStatus::Joined => format!("-- {} joined", who(e)),
                PresenceStatus::Left => format!("-- {} left", who(e)),
                status => format!("-- {} is {status:?}", who(e)).to_lowercase(),
            },
            // Cursors move too often to print.
            _ => String::new(),
        },
        Event::Region(e) => match &e.body {
            Body::RegionSync(r) => format!(
                "-- region {}: {} nodes, {} edges at seq {}",
                r.region_id,
                r.nodes.len(),
                r.edges.len(),
                r.seq
            ),
            Body::RegionEnter(r) => format!("-> {} entered region {}", r.node.id, r.region_id),
            Body::RegionLeave(r) => format!("<- {} left region {}", r.id, r.region_id),
            _ => String::new(),
        },
        Event::Query(r) => format!(
            "[{}] query {}: {} results (+{} -{})",
            r.seq,
            r.query_id,
            r.results.len(),
            r.added.len(),
            r.removed.len()
        ),
        Event::Error(err) => format!("!! server error {:?}: {}", err.code, err.message),
        Event::Gonzai(e) => match &e.body {
            Body::GonzaiDiscover(d) => format!(
                "** Gonzai ({:.2}): {} [{} {}]",
                d.relevance, d.suggestion, d.event.event_type, d.event.id
            ),
            Body::ChaosTrigger(c) => format!(
                "** {} (from {}, intensity {:.1})",
                c.message.as_deref().unwrap_or("chaos"),
                c.initiator.as_deref().unwrap_or("?"),
                c.intensity.unwrap_or(0.5)
            ),
            other => other.message_type().name().to_owned(),
        },
        Event::Reconnecting {
            attempt,
            delay,
            reason,
        } => format!(
            "!! connection lost ({reason}); reconnecting in {} ms (attempt {attempt})",
            delay.as_millis()
        ),
    }
}

/// Prints link suggestions.
async fn suggest(
    config: ClientConfig,
    node: &str,
    limit: u32,
    as_json: bool,
) -> anyhow::Result<()> {
    let (client, _events) = Client::connect(config).await.context("cannot connect")?;
    let found = client.suggest(node, Some(limit)).await;
    client.close().await;
    let found = found.with_context(|| format!("no suggestions for {node}"))?;
    let mut out = std::io::stdout().lock();
    if found.is_empty() {
        if !as_json {
            writeln!(out, "no suggestion for {node}")?;
        }
        return Ok(());
    }
    for s in found {
        if as_json {
            writeln!(out, "{}", serde_json::to_string(&s)?)?;
        } else {
            writeln!(
                out,
                "{:.2}  {node} -[{}]-> {}  ({})",
                s.confidence, s.edge_type, s.target, s.reason
            )?;
        }
    }
    Ok(())
}

/// Prints the graph as JSON.
async fn export(config: ClientConfig) -> anyhow::Result<()> {
    let (client, _events) = Client::connect(config).await.context("cannot connect")?;
    {
        let replica = client.replica();
        let mut nodes: Vec<&Node> = replica.server_nodes().collect();
        let mut edges: Vec<&Edge> = replica.server_edges().collect();
        nodes.sort_by(|a, b| a.id.cmp(&b.id));
        edges.sort_by(|a, b| a.id.cmp(&b.id));
        let value = serde_json::json!({
            "epoch": replica.epoch(),
            "seq": replica.server_seq(),
            "nodes": nodes,
            "edges": edges,
        });
        let mut out = std::io::stdout().lock();
        serde_json::to_writer_pretty(&mut out, &value)?;
        writeln!(out)?;
    }
    client.close().await;
    Ok(())
}

/// Imports JSON Lines in batches.
async fn import(config: ClientConfig, file: &Path) -> anyhow::Result<()> {
    let opened =
        std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
    let total_bytes = opened.metadata().map(|m| m.len()).unwrap_or(0);
    let progress = indicatif::ProgressBar::new(total_bytes);
    progress.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} {bytes}/{total_bytes} read, {msg} [{elapsed}]",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    let reader = Reader::new(file, progress.wrap_read(opened))?;
    let (client, _events) = Client::connect(config).await.context("cannot connect")?;
    let mut importer = Importer::new(client.clone());
    for line in reader {
        let line = line?;
        match line.item {
            Item::Node(node) => importer.node(node, line.len).await?,
            Item::Edge(edge) => importer.edge(edge, line.len).await?,
        }
        let (nodes, edges) = importer.counts();
        // The first line and every thousandth.
        if (nodes + edges) % 1000 == 1 {
            progress.set_message(format!("{nodes} nodes, {edges} edges"));
        }
    }
    let (nodes, edges) = importer.finish().await?;
    progress.finish_with_message(format!("{nodes} nodes, {edges} edges"));
    client.close().await;
    println!("imported {nodes} nodes and {edges} edges");
    Ok(())
}
