//! `fanout`: W writers at R updates/s each, S subscribers; write -> delivery
//! and write -> confirmation latency. [`measure`] is also how `peers`
//! measures other servers on the same workload.

use std::time::Duration;

use gitmind_bench::procstat::{self, CpuMeter};
use gitmind_bench::report;
use gitmind_bench::server::ServerUnderTest;

use crate::fleet::{self, drive, Fleet};
use crate::result::{LoadResult, ServerStats};
use crate::Args;

/// The fan-out workload: how many subscribers and writers, and how fast
/// (`fanout` and `peers`).
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct Workload {
    /// Subscribers.
    #[arg(long, default_value_t = 1000)]
    pub subscribers: usize,
    /// Writers.
    #[arg(long, default_value_t = 10)]
    pub writers: usize,
    /// Updates per second per writer.
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
}

pub async fn run(
    args: &Args,
    server: &ServerUnderTest,
    workload: Workload,
) -> anyhow::Result<(&'static str, LoadResult, String)> {
    let fleet = fleet::connect(args, server.addr, workload.subscribers, workload.writers).await?;
    let fsync = !args.server_args.iter().any(|a| a == "--no-fsync");
    measure(args, server, fleet, "fanout", workload, Some(fsync)).await
}

/// Drives a connected `fleet` for `--duration` and measures the server
/// meanwhile: delivery latency, loss, its CPU (also per delivery) and
/// memory. `confirms` is how a Gitmind server commits (`Some(fsync)`),
/// whose confirmations are measured too; `None` for a server that
/// confirms nothing (`peers`).
pub async fn measure(
    args: &Args,
    server: &ServerUnderTest,
    mut fleet: Fleet,
    scenario: &'static str,
    workload: Workload,
    confirms: Option<bool>,
) -> anyhow::Result<(&'static str, LoadResult, String)> {
    let Workload {
        subscribers,
        writers,
        rate,
    } = workload;
    let rss_before = procstat::rss_bytes(server.pid).unwrap_or(0);
    let cpu = CpuMeter::start(server.pid);
    let step = drive(
        &mut fleet,
        rate,
        Duration::from_secs(args.duration),
        subscribers,
    )
    .await;
    let cpu_percent = cpu.percent();
    let cpu_seconds = cpu.seconds();
    let cpu_us_per_delivery = 1e6 * cpu_seconds / step.received.max(1) as f64;
    let rss = procstat::rss_bytes(server.pid).unwrap_or(0);
    let latency = step.latency();
    let confirm = step.confirm_latency();
    let send_lag = step.send_lag();
    let dir = report::reports_dir();
    let name = args
        .report
        .clone()
        .unwrap_or_else(|| format!("load-{scenario}"));
    if let (Some(d), Some(c)) = (&step.delivery, &step.confirm) {
        let mut series = vec![("write -> delivery", d)];
        if confirms.is_some() {
            series.push(("write -> confirmation", c));
        }
        report::latency_svg(
            &dir.join(format!("{name}.svg")),
            &format!("{scenario} latency"),
            &series,
        )?;
    }
    let mut result = LoadResult {
        scenario: scenario.into(),
        latency_us: latency,
        confirm_latency_us: confirm,
        expected: step.expected,
        received: step.received,
        lost: step.lost,
        duplicates: step.duplicates,
        deliveries_per_sec: step.deliveries_per_sec,
        updates_per_sec: step.sent as f64 / args.duration as f64,
        server: ServerStats {
            cpu_percent,
            rss_bytes: rss,
            rss_per_connection_bytes: rss_before as f64 / (subscribers + writers) as f64,
        },
        generator_saturated: step.generator_saturated(),
        ..LoadResult::default()
    };
    let details = [
        ("subscribers", subscribers.into()),
        ("writers", writers.into()),
        ("rate_per_writer", rate.into()),
        (
            "send_lag_us",
            serde_json::to_value(send_lag).unwrap_or_default(),
        ),
        ("confirmed", step.confirmed.into()),
        ("gonzai_discoveries", step.discoveries.into()),
        ("server_cpu_seconds", cpu_seconds.into()),
        ("server_cpu_us_per_delivery", cpu_us_per_delivery.into()),
    ];
    result
        .details
        .extend(details.into_iter().map(|(k, v)| (k.to_owned(), v)));
    let rows = match confirms {
        Some(fsync) => step.table_rows(fsync),
        None => step.delivery_rows(),
    };
    let md = format!(
        "{subscribers} subscribers, {writers} writers at {rate} updates/s each ({:.0} updates/s in all), {} s.\n\n\
         | measure | value |\n|---|---|\n\
         {rows}\
         | server CPU | {cpu_percent:.1}% of one core ({cpu_seconds:.2} s) |\n\
         | server CPU per delivery | {cpu_us_per_delivery:.2} µs |\n\
         | send lag behind schedule (generator) | {} |\n\n\
         ![latency]({name}.svg)\n",
        step.rate_total,
        args.duration,
        send_lag.ms(),
    );
    Ok((scenario, result, md))
}
