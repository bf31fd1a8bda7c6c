//! `ramp`: raise the rate step by step until p99 passes 100 ms or anything
//! is lost; the highest rate that held.

use std::time::{Duration, Instant};

use gitmind_bench::server::ServerUnderTest;

use crate::fleet::{self, drive, StepResult};
use crate::result::LoadResult;
use crate::Args;

pub async fn run(
    args: &Args,
    server: &ServerUnderTest,
    subscribers: usize,
    writers: usize,
    start: f64,
    step_secs: u64,
) -> anyhow::Result<(&'static str, LoadResult, String)> {
    let mut fleet = fleet::connect(args, server.addr, subscribers, writers).await?;
    let mut total = start;
    let mut held: Option<StepResult> = None;
    let mut md = format!(
        "{subscribers} subscribers, {writers} writers; each step {step_secs} s; a step holds when p99 < 100 ms and nothing is lost.\n\n\
         | total updates/s | p50 ms | p99 ms | lost | dup | deliveries/s | send lag p99 ms | held |\n|---|---|---|---|---|---|---|---|\n"
    );
    let deadline = Instant::now() + Duration::from_secs(args.duration.max(step_secs));
    loop {
        let step = drive(
            &mut fleet,
            total / writers as f64,
            Duration::from_secs(step_secs),
            subscribers,
        )
        .await;
        let p = step.latency();
        let ok = p.p99 < 100_000 && step.lost == 0 && step.duplicates == 0 && step.received > 0;
        md.push_str(&format!(
            "| {:.0} | {:.2} | {:.2} | {} | {} | {:.0} | {:.2} | {} |\n",
            total,
            p.p50 as f64 / 1e3,
            p.p99 as f64 / 1e3,
            step.lost,
            step.duplicates,
            step.deliveries_per_sec,
            step.send_lag().p99 as f64 / 1e3,
            if ok { "yes" } else { "no" }
        ));
        if !ok {
            break;
        }
        held = Some(step);
        total *= 1.5;
        if Instant::now() > deadline {
            md.push_str("\n(stopped by --duration before a step failed)\n");
            break;
        }
    }
    let mut result = LoadResult {
        scenario: "ramp".into(),
        ..LoadResult::default()
    };
    if let Some(step) = &held {
        result.latency_us = step.latency();
        result.confirm_latency_us = step.confirm_latency();
        result.expected = step.expected;
        result.received = step.received;
        result.deliveries_per_sec = step.deliveries_per_sec;
        result.updates_per_sec = step.rate_total;
        result.generator_saturated = step.generator_saturated();
        md.push_str(&format!(
            "\nhighest rate that held: **{:.0} updates/s**\n",
            step.rate_total
        ));
    } else {
        md.push_str("\nno step held\n");
    }
    result.details.insert(
        "highest_rate_held".into(),
        held.as_ref().map_or(0.0, |s| s.rate_total).into(),
    );
    Ok(("ramp", result, md))
}
