//! The verdicts of a hostile run: one per target of issue #13, each with
//! its bar, what was measured and whether the bar was met.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use super::frames::Answer;
use super::{
    graph_flood, joined, mib, slowloris, witness, Junked, Limits, Memory, Options, Reports,
    Sessions, Storm,
};
use crate::fleet::StepResult;

/// One target and whether the run met it.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    /// What is checked.
    pub check: String,
    /// The bar.
    pub bar: String,
    /// What was measured.
    pub measured: String,
    /// Whether the bar was met.
    pub pass: bool,
    /// False when what it judges was turned off for the run (an attacker
    /// count of 0): the verdict then says nothing.
    pub ran: bool,
}

impl Verdict {
    /// Marks the verdict as not run when `count` (of the attackers it
    /// judges) is 0.
    fn unless_none(self, count: usize) -> Verdict {
        Verdict {
            ran: count > 0,
            ..self
        }
    }

    /// What the report's result column says.
    pub fn result(&self) -> &'static str {
        match (self.ran, self.pass) {
            (false, _) => "not run",
            (true, true) => "met",
            (true, false) => "**missed**",
        }
    }
}

/// Whether every verdict that ran was met.
pub(super) fn all_met(verdicts: &[Verdict]) -> bool {
    verdicts.iter().all(|v| v.pass || !v.ran)
}

/// How late past `handshake_timeout_ms` a slowloris may be cut and still
/// count as cut in time: the server's timer on a loaded, shared machine.
const CUT_SLACK: Duration = Duration::from_secs(1);
/// How far over its limit a stormer's relayed rate may be seen and still
/// count as throttled: the edges of the witness's window and timer jitter.
const RELAY_TOLERANCE: f64 = 0.1;

/// One verdict per target of issue #13.
pub(super) fn verdicts(
    o: &Options,
    limits: Limits,
    step: &StepResult,
    r: &Reports,
    memory: &Memory,
) -> Vec<Verdict> {
    vec![
        latency_verdict(o, step),
        loss_verdict(step),
        sync_verdict(&r.sync_flood, r.seconds).unless_none(o.sync_flooders),
        graph_verdict(&r.graph_flood, r.seconds).unless_none(o.graph_flooders),
        junk_verdict(&r.junk, limits, r.seconds).unless_none(o.junk_connections),
        slowloris_verdict(&r.slowloris, limits).unless_none(o.slowloris),
        storm_verdict(&r.presence_storm, limits, r.seconds).unless_none(o.stormers),
        memory_verdict(o, memory),
        released_verdict(memory).unless_none(o.graph_flooders),
    ]
}

/// Honest write -> delivery p99 under the bar.
pub(super) fn latency_verdict(o: &Options, step: &StepResult) -> Verdict {
    let p = step.latency();
    Verdict {
        check: "honest write -> delivery p99".into(),
        bar: format!("< {} ms", o.p99_ms),
        measured: format!(
            "p99 {:.1} ms (p50 {:.1} ms, max {:.1} ms, {} deliveries)",
            p.p99 as f64 / 1e3,
            p.p50 as f64 / 1e3,
            p.max as f64 / 1e3,
            p.count
        ),
        pass: p.count > 0 && (p.p99 as f64) < o.p99_ms * 1e3,
        ran: true,
    }
}

/// Every confirmed update reached every honest subscriber, once.
pub(super) fn loss_verdict(step: &StepResult) -> Verdict {
    Verdict {
        check: "confirmed updates lost".into(),
        bar: "0 (and none duplicated)".into(),
        measured: format!(
            "{} confirmed of {} sent ({} rolled back); {} deliveries lost, {} duplicated; {} subscribers cut off",
            step.confirmed,
            step.sent,
            step.rolled_back,
            step.confirmed_lost(),
            step.duplicates,
            step.disconnected
        ),
        pass: step.confirmed > 0 && step.confirmed_lost() == 0 && step.duplicates == 0,
        ran: true,
    }
}

/// The sync flooders were refused `rate_limited` or closed.
pub(super) fn sync_verdict(sync: &Sessions, seconds: f64) -> Verdict {
    let t = &sync.tally;
    let rate_limited = t.errors.get("rate_limited").copied().unwrap_or(0);
    Verdict {
        check: "sync flood throttled or closed".into(),
        bar: "requests refused `rate_limited` or the sessions closed".into(),
        measured: format!(
            "{} frames of two requests ({:.0}/s per session): {} syncs served ({:.1}/s per session), {} rate_limited; closed: {}",
            t.sent,
            sync.sent_rate_each(seconds),
            t.syncs,
            t.syncs as f64 / sync.sessions.max(1) as f64 / seconds.max(1e-9),
            rate_limited,
            joined(&t.closes),
        ),
        pass: t.sent > 0 && (rate_limited > 0 || closed_by_server(&t.closes) > 0),
        ran: true,
    }
}

/// The graph-name flood met refused handshakes or closes.
pub(super) fn graph_verdict(graphs: &graph_flood::GraphFloodReport, seconds: f64) -> Verdict {
    let refused: u64 = graphs.tally.refused.values().sum();
    Verdict {
        check: "graph-name flood throttled or closed".into(),
        bar: "handshakes refused or connections closed".into(),
        measured: format!(
            "{} of {} names opened ({:.0}/s), {} refused ({}), closed: {}",
            graphs.opened,
            graphs.names,
            graphs.opened as f64 / seconds.max(1e-9),
            refused,
            joined(&graphs.tally.refused),
            joined(&graphs.tally.closes),
        ),
        pass: graphs.tally.connects > 0
            && (refused > 0 || closed_by_server(&graphs.tally.closes) > 0),
        ran: true,
    }
}

/// Junk senders closed 1008 within the error budget (1009 for frames over
/// the limit), every kind of junk sent answered as the protocol says.
pub(super) fn junk_verdict(junked: &Junked, limits: Limits, seconds: f64) -> Verdict {
    let junk = &junked.tally;
    let policy = junk.closes.get("1008").copied().unwrap_or(0);
    let too_big = junk.closes.get("1009").copied().unwrap_or(0);
    let unanswered: Vec<&str> = junked
        .kinds
        .iter()
        .map(|j| match j.answer() {
            Answer::Error(code) => (code.name(), junk.errors.contains_key(code.name())),
            Answer::Rollback => ("rollback", junk.rollbacks > 0),
        })
        .filter(|(_, seen)| !seen)
        .map(|(name, _)| name)
        .collect();
    Verdict {
        check: "junk frames closed".into(),
        bar: format!(
            "closed 1008 after at most {} bad messages; 1009 for a frame over the limit",
            limits.errors_per_minute
        ),
        measured: format!(
            "{} frames ({:.0}/s) on {} connections: closed {}; at most {} answered on one connection; {}",
            junk.sent,
            junk.sent as f64 / seconds.max(1e-9),
            junk.connects,
            joined(&junk.closes),
            junk.max_refusals_per_connection,
            if unanswered.is_empty() {
                "every kind answered as the protocol says".to_owned()
            } else {
                format!("never answered: {}", unanswered.join(", "))
            },
        ),
        pass: policy > 0
            && unanswered.is_empty()
            && junk.max_refusals_per_connection <= limits.errors_per_minute
            && (junked.oversized_sent == 0 || too_big > 0),
        ran: true,
    }
}

/// Every slowloris cut within the handshake time.
pub(super) fn slowloris_verdict(slow: &slowloris::SlowlorisReport, limits: Limits) -> Verdict {
    let in_time = (limits.handshake_timeout + CUT_SLACK).as_micros() as u64;
    Verdict {
        check: "slowloris cut".into(),
        bar: format!(
            "every head cut within {:.1} s (+{:.0} s slack)",
            limits.handshake_timeout.as_secs_f64(),
            CUT_SLACK.as_secs_f64()
        ),
        measured: format!(
            "{} cut of {} opened, after {:.2} s (p50) to {:.2} s (max); {} completed; {} open at the end (oldest {:.2} s)",
            slow.cut,
            slow.connects,
            slow.lived_us.p50 as f64 / 1e6,
            slow.lived_us.max as f64 / 1e6,
            slow.completed,
            slow.open_at_end,
            slow.oldest_open_us as f64 / 1e6,
        ),
        pass: slow.cut > 0
            && slow.lived_us.max <= in_time
            && slow.oldest_open_us <= in_time
            && slow.completed == 0,
        ran: true,
    }
}

/// The witness saw each stormer relayed at no more than the session
/// limits, while the stormers sent faster than them or were closed and
/// kept out (after a 1008 the server refuses the user for a while).
pub(super) fn storm_verdict(storm: &Storm, limits: Limits, seconds: f64) -> Verdict {
    let report = &storm.sessions.tally;
    let shut_out =
        report.closes.values().sum::<u64>() > 0 && report.refused.values().sum::<u64>() > 0;
    let seen = &storm.relayed;
    let per_kind = storm.sessions.sent_rate_each(seconds) / witness::KINDS.len() as f64;
    let bars = [
        limits.cursor_rate,
        limits.presence_rate,
        limits.presence_rate,
    ];
    let relayed: Vec<f64> = (0..witness::KINDS.len())
        .map(|k| seen.max_rate(k))
        .collect();
    Verdict {
        check: "presence storm throttled".into(),
        bar: format!(
            "relayed at most {} cursor moves, {} selections, {} presence changes a second per session",
            limits.cursor_rate, limits.presence_rate, limits.presence_rate
        ),
        measured: format!(
            "{:.0} of each sent per second per stormer{}; the witness saw at most {:.1} / {:.1} / {:.1} a second{}",
            per_kind,
            if shut_out {
                " (closed, then refused at the handshake)"
            } else {
                ""
            },
            relayed[0],
            relayed[1],
            relayed[2],
            if seen.disconnected {
                " (the witness was cut off)"
            } else {
                ""
            },
        ),
        pass: !seen.disconnected
            && !seen.per_sender.is_empty()
            && relayed
                .iter()
                .zip(bars)
                .all(|(seen, bar)| {
                    *seen <= bar * (1.0 + RELAY_TOLERANCE) && (per_kind > bar || shut_out)
                }),
        ran: true,
    }
}

/// The server's RSS grew no more than the budget.
pub(super) fn memory_verdict(o: &Options, memory: &Memory) -> Verdict {
    let growth = memory.peak.saturating_sub(memory.start);
    Verdict {
        check: "server memory bounded".into(),
        bar: format!(
            "RSS grows at most {} MiB over its level before the attack",
            o.rss_budget_mib
        ),
        measured: format!(
            "{:.1} MiB before, peak {:.1} MiB (+{:.1}) at {:.0} s, {:.1} MiB at the end, {:.1} MiB settled",
            mib(memory.start),
            mib(memory.peak),
            mib(growth),
            memory.peak_at_secs,
            mib(memory.end_of_attack),
            mib(memory.settled),
        ),
        pass: memory.start > 0 && growth <= o.rss_budget_mib << 20,
        ran: true,
    }
}

/// The graphs the flood opened are let go once their sessions left;
/// otherwise each new name keeps memory for the server's lifetime, and a
/// flood without a count has no bound.
pub(super) fn released_verdict(memory: &Memory) -> Verdict {
    Verdict {
        check: "flooded graph names let go".into(),
        bar: "no sampled name still held once its session left".into(),
        measured: format!(
            "{} of {} sampled names still held; the same flood again, alone: {:+.1} MiB for {} names ({:+.1} KiB a name)",
            memory.held,
            memory.asked,
            (memory.after_alone as f64 - memory.settled as f64) / f64::from(1u32 << 20),
            memory.alone_opened,
            memory.per_graph_name() / 1024.0,
        ),
        pass: memory.asked > 0 && memory.held == 0,
        ran: true,
    }
}

/// Connections the server ended with a close frame, from a report's closes.
pub(super) fn closed_by_server(closes: &BTreeMap<String, u64>) -> u64 {
    closes
        .iter()
        .filter(|(code, _)| code.as_str() != "none")
        .map(|(_, n)| n)
        .sum()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::frames::Junk;
    use super::super::tally;
    use super::*;

    fn storm(relayed: [u64; 3], sent: u64, seconds: f64) -> Storm {
        let mut seen = witness::Seen {
            seconds,
            ..witness::Seen::default()
        };
        seen.per_sender.insert("storm0".into(), relayed);
        Storm {
            sessions: Sessions {
                sessions: 1,
                rate_each: sent as f64 / seconds,
                tally: tally::TallyReport {
                    sent,
                    ..tally::TallyReport::default()
                },
            },
            relayed: seen,
        }
    }

    #[test]
    fn a_storm_relayed_faster_than_a_limit_or_not_sent_fast_is_not_throttled() {
        let limits = Limits::from(&gitmind_server::Config::default());
        let held = storm([300, 100, 100], 30_000, 10.0);
        assert!(storm_verdict(&held, limits, 10.0).pass);
        let cursors_through = storm([400, 100, 100], 30_000, 10.0);
        assert!(!storm_verdict(&cursors_through, limits, 10.0).pass);
        let presence_through = storm([300, 100, 150], 30_000, 10.0);
        assert!(!storm_verdict(&presence_through, limits, 10.0).pass);
        // Sent no faster than the limits: the run shows nothing.
        let slow = storm([100, 100, 100], 300, 10.0);
        assert!(!storm_verdict(&slow, limits, 10.0).pass);
    }

    #[test]
    fn junk_answered_past_the_budget_or_never_closed_fails() {
        let limits = Limits::from(&gitmind_server::Config::default());
        let mut tally = tally::TallyReport {
            sent: 1000,
            connects: 10,
            rollbacks: 1,
            max_refusals_per_connection: limits.errors_per_minute,
            ..tally::TallyReport::default()
        };
        for code in ["bad_frame", "invalid", "unknown_type", "too_large"] {
            tally.errors.insert(code.into(), 1);
        }
        tally.closes.insert("1008".into(), 9);
        tally.closes.insert("1009".into(), 1);
        let junked = |tally: tally::TallyReport| Junked {
            connections: 1,
            kinds: Junk::CYCLE.to_vec(),
            rate_total: 100.0,
            oversized_sent: 1,
            zstd_bomb_bytes: 0,
            tally,
        };
        assert!(junk_verdict(&junked(tally.clone()), limits, 10.0).pass);
        let mut over = tally.clone();
        over.max_refusals_per_connection = limits.errors_per_minute + 1;
        assert!(!junk_verdict(&junked(over), limits, 10.0).pass);
        let mut no_1009 = tally.clone();
        no_1009.closes.remove("1009");
        assert!(!junk_verdict(&junked(no_1009), limits, 10.0).pass);
        let mut unanswered = tally;
        unanswered.errors.remove("too_large");
        assert!(!junk_verdict(&junked(unanswered), limits, 10.0).pass);
    }

    #[test]
    fn a_verdict_of_an_attacker_that_was_off_says_nothing() {
        let limits = Limits::from(&gitmind_server::Config::default());
        let off = storm([0, 0, 0], 0, 10.0);
        let verdict = storm_verdict(&off, limits, 10.0).unless_none(0);
        assert!(!verdict.pass);
        assert_eq!(verdict.result(), "not run");
        assert!(all_met(std::slice::from_ref(&verdict)));
        let missed = verdict.unless_none(4);
        assert_eq!(missed.result(), "**missed**");
        assert!(!all_met(&[missed]));
    }

    #[test]
    fn a_graph_flood_counts_as_throttled_only_when_refused_or_closed_and_let_go_only_when_forgotten(
    ) {
        let memory = Memory {
            start: 1,
            peak: 1,
            peak_at_secs: 0.0,
            end_of_attack: 1,
            settled: 1,
            alone_opened: 0,
            after_alone: 1,
            held: 0,
            asked: 0,
            cpu_percent: 0.0,
            peak_cpu_percent: 0.0,
        };
        let mut report = graph_flood::GraphFlood::new("f".into(), 10).report();
        report.tally.connects = 10;
        assert!(!graph_verdict(&report, 1.0).pass);
        report.tally.refused.insert("429".into(), 1);
        assert!(graph_verdict(&report, 1.0).pass);
        assert!(!released_verdict(&memory).pass, "nothing was asked");
        let held = Memory {
            held: 3,
            asked: 10,
            ..memory.clone()
        };
        assert!(!released_verdict(&held).pass);
        let let_go = Memory { held: 0, ..held };
        assert!(released_verdict(&let_go).pass);
    }
}
