//! `fanout`: W writers at R updates/s each, S subscribers; write -> delivery
//! and write -> confirmation latency.

use std::time::Duration;

use gitmind_bench::procstat::{self, CpuMeter};
use gitmind_bench::report;
use gitmind_bench::server::ServerUnderTest;

use crate::fleet::{self, drive};
use crate::result::{LoadResult, ServerStats};
use crate::Args;

pub async fn run(
    args: &Args,
    server: &ServerUnderTest,
    subscribers: usize,
    writers: usize,
    rate: f64,
) -> anyhow::Result<(&'static str, LoadResult, String)> {
    let mut fleet = fleet::connect(args, server.addr, subscribers, writers).await?;
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
    let rss = procstat::rss_bytes(server.pid).unwrap_or(0);
    let latency = step.latency();
    let confirm = step.confirm_latency();
    let send_lag = step.send_lag();
    let dir = report::reports_dir();
    if let (Some(d), Some(c)) = (&step.delivery, &step.confirm) {
        report::latency_svg(
            &dir.join(format!(
                "{}.svg",
                args.report.as_deref().unwrap_or("load-fanout")
            )),
            "fan-out latency",
            &[("write -> delivery", d), ("write -> confirmation", c)],
        )?;
    }
    let mut result = LoadResult {
        scenario: "fanout".into(),
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
    result
        .details
        .insert("subscribers".into(), subscribers.into());
    result.details.insert("writers".into(), writers.into());
    result.details.insert("rate_per_writer".into(), rate.into());
    result.details.insert(
        "send_lag_us".into(),
        serde_json::to_value(send_lag).unwrap_or_default(),
    );
    result
        .details
        .insert("confirmed".into(), step.confirmed.into());
    let fsync = !args.server_args.iter().any(|a| a == "--no-fsync");
    let md = format!(
        "{subscribers} subscribers, {writers} writers at {rate} updates/s each ({:.0} updates/s in all), {} s.\n\n\
         | measure | value |\n|---|---|\n\
         {}\
         | server CPU | {:.1}% of one core |\n\
         | send lag behind schedule (generator) | {} |\n\n\
         ![latency]({}.svg)\n",
        step.rate_total,
        args.duration,
        step.table_rows(fsync),
        cpu_percent,
        send_lag.ms(),
        args.report.as_deref().unwrap_or("load-fanout"),
    );
    Ok(("fanout", result, md))
}
