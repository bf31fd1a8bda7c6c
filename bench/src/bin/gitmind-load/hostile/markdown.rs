//! The Markdown report of a hostile run: what ran, the verdicts, the
//! honest clients, what each attacker got, memory, where the CPU went
//! and the server's own counters.

use std::collections::BTreeMap;

use super::verdict::Verdict;
use super::{joined, mib, tally, Busy, Limits, Memory, Options, Reports, SETTLE};
use crate::fleet::StepResult;
use crate::Args;

/// Threads of each process the report lists.
const BUSIEST: usize = 6;

/// The report's text below its header (which `main` writes).
#[allow(clippy::too_many_arguments)]
pub(super) fn markdown(
    args: &Args,
    o: &Options,
    limits: Limits,
    step: &StepResult,
    cpu_percent: f64,
    r: &Reports,
    verdicts: &[Verdict],
    memory: &Memory,
    busy: &Busy,
    counters: &BTreeMap<String, f64>,
    name: &str,
) -> String {
    let ran = verdicts.iter().filter(|v| v.ran).count();
    let passed = verdicts.iter().filter(|v| v.ran && v.pass).count();
    let mut md = format!(
        "{} honest subscribers and {} writers ({} updates/s in all) on one graph for {} s, while at the same time:\n\n\
         - sync flood: {} sessions in that graph asking for `graph.sync` {} times a second each;\n\
         - graph-name flood: {} tasks opening up to {} new graph names, closing each once its sync came;\n\
         - junk: {} connections sending {} bad frames a second in all, reconnecting when closed; every {}th connection opens with a frame over the limit;\n\
         - slowloris: {} connections dribbling an upgrade request, a byte every {} ms;\n\
         - presence storm: {} sessions in that graph sending {} cursor moves, selections and presence changes a second each, in turn.\n\n\
         The server runs with its defaults but `graph_idle_unload_ms` (5 s, so the release of flooded names can be seen within the run); the verdicts hold it to them (errors before 1008: {}, handshake time: {} s, relayed cursors {}/s, selections and presence {}/s each).\n\n\
         **{}: {passed} of {ran} targets met{}.**\n\n\
         | target | bar | measured | result |\n|---|---|---|---|\n",
        o.subscribers,
        o.writers,
        o.rate,
        args.duration,
        o.sync_flooders,
        o.sync_rate,
        o.graph_flooders,
        o.graph_names,
        o.junk_connections,
        o.junk_rate,
        o.oversized_every,
        o.slowloris,
        o.slowloris_byte_ms,
        o.stormers,
        o.storm_rate,
        limits.errors_per_minute,
        limits.handshake_timeout.as_secs_f64(),
        limits.cursor_rate,
        limits.presence_rate,
        if passed == ran { "PASS" } else { "FAIL" },
        if ran < verdicts.len() {
            format!(" ({} not run: their attackers were off)", verdicts.len() - ran)
        } else {
            String::new()
        },
    );
    for v in verdicts {
        md.push_str(&format!(
            "| {} | {} | {} | {} |\n",
            v.check,
            v.bar,
            v.measured,
            v.result()
        ));
    }
    let fsync = !args.server_args.iter().any(|a| a == "--no-fsync");
    md.push_str(&format!(
        "\n## Honest clients\n\n| measure | value |\n|---|---|\n{}\
         | updates rolled back | {} |\n\
         | subscribers cut off | {} |\n\
         | server CPU during the attack | {:.1}% of one core (highest second {:.0}%); {:.1}% with the drain |\n\
         | send lag behind schedule (generator) | {} |\n\
         | slowest delivery of the updates of each second, ms | {} |\n\n\
         ![latency]({name}.svg)\n",
        step.table_rows(fsync),
        step.rolled_back,
        step.disconnected,
        memory.cpu_percent,
        memory.peak_cpu_percent,
        cpu_percent,
        step.send_lag().ms(),
        step.slowest_by_second
            .iter()
            .map(|us| format!("{:.0}", *us as f64 / 1e3))
            .collect::<Vec<_>>()
            .join(" "),
    ));
    md.push_str(&format!(
        "\n## What each attacker got\n\n| attacker | sent | what came back |\n|---|---|---|\n\
         | sync flood | {} frames of two requests{}, {} connections | {} |\n\
         | graph-name flood | {} connections, {} names opened (sync after p50 {:.1} ms, max {:.1} ms) | {} |\n\
         | junk | {} frames{} ({} over the limit; zstd bomb of {} bytes), {} connections | {} |\n\
         | slowloris | {} bytes, {} connections | {} cut, {} completed, refused: {}, {} connects failed |\n\
         | presence storm | {} messages{}, {} connections | {}; relayed per stormer (cursor / selection / presence): {} |\n",
        r.sync_flood.tally.sent,
        skipped(&r.sync_flood.tally),
        r.sync_flood.tally.connects,
        r.sync_flood.tally.line(),
        r.graph_flood.tally.connects,
        r.graph_flood.opened,
        r.graph_flood.open_time_us.p50 as f64 / 1e3,
        r.graph_flood.open_time_us.max as f64 / 1e3,
        r.graph_flood.tally.line(),
        r.junk.tally.sent,
        skipped(&r.junk.tally),
        r.junk.oversized_sent,
        r.junk.zstd_bomb_bytes,
        r.junk.tally.connects,
        r.junk.tally.line(),
        r.slowloris.bytes_sent,
        r.slowloris.connects,
        r.slowloris.cut,
        r.slowloris.completed,
        joined(&r.slowloris.refused),
        r.slowloris.connect_failures,
        r.presence_storm.sessions.tally.sent,
        skipped(&r.presence_storm.sessions.tally),
        r.presence_storm.sessions.tally.connects,
        r.presence_storm.sessions.tally.line(),
        r.presence_storm
            .relayed
            .per_sender
            .iter()
            .map(|(user, n)| format!("{user} {} / {} / {}", n[0], n[1], n[2]))
            .collect::<Vec<_>>()
            .join(", "),
    ));
    md.push_str(&format!(
        "\n## Server memory\n\n| moment | RSS |\n|---|---|\n\
         | attack begins (honest clients connected) | {:.1} MiB |\n\
         | peak during the attack and the drain after it ({:.0} s in) | {:.1} MiB |\n\
         | attack ends | {:.1} MiB |\n\
         | {} s later | {:.1} MiB |\n\
         | after the graph-name flood again, alone ({} names) | {:.1} MiB ({:+.1} KiB per name) |\n\n\
         Of {} graph names flooded during the attack (sampled), the server still held {} afterwards.\n",
        mib(memory.start),
        memory.peak_at_secs,
        mib(memory.peak),
        mib(memory.end_of_attack),
        SETTLE.as_secs(),
        mib(memory.settled),
        memory.alone_opened,
        mib(memory.after_alone),
        memory.per_graph_name() / 1024.0,
        memory.asked,
        memory.held,
    ));
    md.push_str(&format!(
        "\n## Where the CPU went during the attack and the drain\n\n\
         The machine was busy {:.0}% of one core (of {} cores: {:.0}%): the server {:.0}%, \
         this program {:.0}%, other processes {:.0}%; the hypervisor took {:.1}% (steal).\n\n\
         | process | thread | CPU, % of one core |\n|---|---|---|\n",
        busy.machine,
        busy.cores,
        100.0 * busy.cores as f64,
        busy.server_total(),
        busy.generator_total(),
        busy.others,
        busy.stolen,
    ));
    for (process, threads) in [("server", &busy.server), ("generator", &busy.generator)] {
        for (thread, percent) in threads.iter().take(BUSIEST) {
            md.push_str(&format!("| {process} | {thread} | {percent:.1} |\n"));
        }
    }
    md.push_str("\n## The server's counters over the run\n\n| counter | change |\n|---|---|\n");
    for (k, v) in counters {
        md.push_str(&format!("| `{k}` | {v:.0} |\n"));
    }
    md
}

/// What a sender's schedule dropped, for the report.
fn skipped(tally: &tally::TallyReport) -> String {
    if tally.skipped == 0 {
        return String::new();
    }
    format!(
        " ({} more due but not sent: reconnecting or behind)",
        tally.skipped
    )
}
