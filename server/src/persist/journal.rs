//! The journal of a commit, in its message, and the message's trailers.
//!
//! ```text
//! alice: node.update pkg:libc6, +2 more
//!
//! {"seq":41,"atMs":1764158000000,"userId":"alice","sessionId":"s-1","mutationId":"m-7","event":{...},"outcome":{...},"writes":[{"node":"pkg:libc6","blob":"3fa1..."}]}
//! {"seq":42,...}
//! {"seq":43,...}
//!
//! Gitmind-Seq: 41..43
//! Gitmind-Epoch: 9f86d081884c7d65
//! Gitmind-Format: 1
//! ```
//!
//! One JSON line per change, oldest first: everything the owner needs to
//! rebuild its replay window, idempotency and text history after a restart.
//! `event` and `outcome` are the protocol's JSON codec output; their
//! `commit` is left out (a commit cannot name itself) and filled in on load.
//! `writes` names each entity the change wrote and the blob it wrote (no
//! `blob`: deleted), so `verify` can check the tree against the journal.
//! The trailers close the message, where `git interpret-trailers` and
//! `git log --format='%(trailers)'` find them.

use gitmind_schema::json;
use gitmind_schema::message::Body;
use gitmind_schema::Envelope;
use serde::Deserialize;

use super::layout::Kind;
use super::object::ObjectId;
use gitmind_owner::change::{ChangeRecord, Write};

/// The value of `Gitmind-Format` this version writes and reads.
pub const FORMAT: u32 = 1;
/// The longest summary line, in characters.
const SUMMARY_CHARS: usize = 120;

/// One entity a change wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalWrite {
    /// Node or edge.
    pub kind: Kind,
    /// Its id.
    pub id: String,
    /// The blob written; `None`: deleted.
    pub blob: Option<ObjectId>,
}

/// One change as read back from a journal line.
#[derive(Debug, Clone)]
pub struct JournalEntry {
    /// The change, with `writes` empty and `commit` not yet filled in.
    pub record: ChangeRecord,
    /// What it wrote.
    pub writes: Vec<JournalWrite>,
}

/// Appends the journal line of one change (without the newline).
pub fn push_line(out: &mut String, change: &ChangeRecord, writes: &[JournalWrite]) {
    use std::fmt::Write as _;
    let _ = write!(
        out,
        "{{\"seq\":{},\"atMs\":{},\"userId\":",
        change.seq, change.at_ms
    );
    push_json_str(out, &change.user_id);
    out.push_str(",\"sessionId\":");
    push_json_str(out, &change.session_id);
    out.push_str(",\"mutationId\":");
    push_json_str(out, &change.mutation_id);
    out.push_str(",\"event\":");
    push_codec(out, &change.event);
    out.push_str(",\"outcome\":");
    push_codec(out, &change.outcome);
    out.push_str(",\"writes\":[");
    for (i, w) in writes.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(match w.kind {
            Kind::Node => "{\"node\":",
            Kind::Edge => "{\"edge\":",
        });
        push_json_str(out, &w.id);
        if let Some(blob) = &w.blob {
            let _ = write!(out, ",\"blob\":\"{blob}\"");
        }
        out.push('}');
    }
    out.push_str("]}");
}

fn push_json_str(out: &mut String, s: &str) {
    // Serializing a string to JSON cannot fail.
    out.push_str(&serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned()));
}

fn push_codec(out: &mut String, envelope: &Envelope) {
    let bytes = json::encode(envelope);
    // The codec writes JSON, which is UTF-8.
    out.push_str(std::str::from_utf8(&bytes).unwrap_or("null"));
}

/// A journal line as stored. `event` and `outcome` decode through the
/// codec's own `Deserialize` (the same rules as a frame, without the frame
/// size and depth checks: this is the server's own data, already checked
/// when it arrived).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Line {
    seq: u64,
    at_ms: u64,
    user_id: String,
    session_id: String,
    mutation_id: String,
    event: Envelope,
    outcome: Envelope,
    writes: Vec<LineWrite>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LineWrite {
    #[serde(default)]
    node: Option<String>,
    #[serde(default)]
    edge: Option<String>,
    #[serde(default)]
    blob: Option<String>,
}

/// Reads one journal line.
///
/// # Errors
/// A message naming the problem.
pub fn decode_line(line: &str) -> Result<JournalEntry, String> {
    let raw: Line = serde_json::from_str(line)
        .or_else(|e| without_deleted_edge_lists(line).ok_or(e))
        .map_err(|e| format!("journal line is not valid: {e}"))?;
    let (event, outcome) = (raw.event, raw.outcome);
    let mut writes = Vec::with_capacity(raw.writes.len());
    for w in raw.writes {
        let (kind, id) = match (w.node, w.edge) {
            (Some(id), None) => (Kind::Node, id),
            (None, Some(id)) => (Kind::Edge, id),
            _ => {
                return Err(format!(
                    "journal write of seq {} names no single entity",
                    raw.seq
                ))
            }
        };
        let blob = match w.blob {
            None => None,
            Some(hex) => {
                Some(ObjectId::from_hex(&hex).ok_or_else(|| format!("bad blob id `{hex}`"))?)
            }
        };
        writes.push(JournalWrite { kind, id, blob });
    }
    // The owner rebuilds its tombstones from what each change deleted.
    let deleted = writes
        .iter()
        .filter(|w| w.blob.is_none())
        .map(|w| match w.kind {
            Kind::Node => Write::NodeDeleted(w.id.clone()),
            Kind::Edge => Write::EdgeDeleted(w.id.clone()),
        })
        .collect();
    Ok(JournalEntry {
        record: ChangeRecord {
            seq: raw.seq,
            at_ms: raw.at_ms,
            user_id: raw.user_id,
            session_id: raw.session_id,
            mutation_id: raw.mutation_id,
            event,
            outcome,
            writes: deleted,
        },
        writes,
    })
}

/// A journal line written before `node.delete` events stopped listing the
/// edges deleted with the node (the `edges` of their data), without those
/// lists; `None` when the line is not JSON or has none to drop.
fn without_deleted_edge_lists(line: &str) -> Option<Line> {
    fn strip(op: &mut serde_json::Value) -> bool {
        let is_delete = op.get("type").and_then(|t| t.as_str()) == Some("node.delete");
        let data = op.get_mut("data").and_then(|d| d.as_object_mut());
        match data {
            Some(data) if is_delete => data.remove("edges").is_some(),
            Some(data) => data
                .get_mut("ops")
                .and_then(|ops| ops.as_array_mut())
                .is_some_and(|ops| ops.iter_mut().fold(false, |any, op| strip(op) | any)),
            None => false,
        }
    }
    let mut value: serde_json::Value = serde_json::from_str(line).ok()?;
    if !strip(value.get_mut("event")?) {
        return None;
    }
    // `Line` borrows its envelopes' text: read it back from a string.
    serde_json::from_str(&value.to_string()).ok()
}

/// The one-line summary of a commit: `alice: node.create pkg:x, +3 more`.
pub fn summary(changes: &[std::sync::Arc<ChangeRecord>]) -> String {
    let Some(first) = changes.first() else {
        return "gitmind: no change".to_owned();
    };
    let mut s = format!("{}: {}", first.user_id, first.event.type_name());
    if let Some(target) = target_of(&first.event.body) {
        s.push(' ');
        s.push_str(&target);
    }
    if changes.len() > 1 {
        s.push_str(&format!(", +{} more", changes.len() - 1));
    }
    let clean: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if clean.chars().count() <= SUMMARY_CHARS {
        return clean;
    }
    let mut cut: String = clean.chars().take(SUMMARY_CHARS - 1).collect();
    cut.push('…');
    cut
}

/// What an event is about, for the summary.
fn target_of(body: &Body) -> Option<String> {
    match body {
        Body::NodeCreate(b) => Some(b.node.id.clone()),
        Body::NodeUpdate(b) => Some(b.id.clone()),
        Body::NodeDelete(b) => Some(b.id.clone()),
        Body::EdgeCreate(b) => Some(b.edge.id.clone().unwrap_or_else(|| {
            gitmind_schema::model::Edge::make_id(&b.edge.source, &b.edge.edge_type, &b.edge.target)
        })),
        Body::EdgeUpdate(b) => b.edge_id(),
        Body::EdgeDelete(b) => b.edge_id(),
        Body::BatchUpdate(b) => Some(format!("({} ops)", b.ops.len())),
        _ => None,
    }
}

/// The trailers and journal of a commit message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedMessage<'a> {
    /// The first `seq` the commit holds.
    pub seq_from: u64,
    /// The last `seq` it holds.
    pub seq_to: u64,
    /// The graph's epoch.
    pub epoch: &'a str,
    /// The journal lines, oldest first.
    pub lines: Vec<&'a str>,
}

/// Reads a commit message this module wrote.
///
/// # Errors
/// A message naming what is missing or malformed.
pub fn parse_message(message: &str) -> Result<ParsedMessage<'_>, String> {
    let mut seq = None;
    let mut epoch = None;
    let mut format = None;
    let mut lines = Vec::new();
    for line in message.lines().skip(1) {
        if line.starts_with('{') {
            lines.push(line);
        } else if let Some(v) = line.strip_prefix("Gitmind-Seq: ") {
            let (a, b) = v.split_once("..").unwrap_or((v, v));
            let (Ok(a), Ok(b)) = (a.trim().parse::<u64>(), b.trim().parse::<u64>()) else {
                return Err(format!("bad Gitmind-Seq trailer `{v}`"));
            };
            seq = Some((a, b));
        } else if let Some(v) = line.strip_prefix("Gitmind-Epoch: ") {
            epoch = Some(v.trim());
        } else if let Some(v) = line.strip_prefix("Gitmind-Format: ") {
            format = v.trim().parse::<u32>().ok();
        }
    }
    let Some((seq_from, seq_to)) = seq else {
        return Err("no Gitmind-Seq trailer".into());
    };
    let Some(epoch) = epoch else {
        return Err("no Gitmind-Epoch trailer".into());
    };
    if format != Some(FORMAT) {
        return Err(format!(
            "Gitmind-Format is {format:?}; this version reads {FORMAT}"
        ));
    }
    if seq_to < seq_from || seq_to - seq_from + 1 != lines.len() as u64 {
        return Err(format!(
            "Gitmind-Seq {seq_from}..{seq_to} but {} journal lines",
            lines.len()
        ));
    }
    Ok(ParsedMessage {
        seq_from,
        seq_to,
        epoch,
        lines,
    })
}

/// Builds a commit message: summary, journal lines, trailers.
pub fn message(summary: &str, journal: &str, seq_from: u64, seq_to: u64, epoch: &str) -> String {
    let mut m = String::with_capacity(summary.len() + journal.len() + 128);
    m.push_str(summary);
    m.push_str("\n\n");
    m.push_str(journal);
    if !journal.is_empty() && !journal.ends_with('\n') {
        m.push('\n');
    }
    m.push('\n');
    m.push_str(&format!(
        "Gitmind-Seq: {seq_from}..{seq_to}\nGitmind-Epoch: {epoch}\nGitmind-Format: {FORMAT}\n"
    ));
    m
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::Arc;

    use gitmind_schema::message::{NodeCreate, UpdateConfirmed};
    use gitmind_schema::model::Node;

    use super::*;

    pub(crate) fn record(seq: u64, id: &str) -> ChangeRecord {
        let node = Node {
            id: id.into(),
            label: Some("L\nx".into()),
            rev: Some(seq),
            ..Node::default()
        };
        let mut event = Envelope::new(
            format!("m{seq}"),
            Body::NodeCreate(NodeCreate {
                base_seq: None,
                node,
                commit: None,
            }),
        );
        event.seq = Some(seq);
        event.user_id = Some("alice".into());
        let outcome = Envelope::new(
            format!("o{seq}"),
            Body::UpdateConfirmed(UpdateConfirmed {
                reference: format!("m{seq}"),
                seq,
                commit: String::new(),
                rev: seq,
                text: None,
            }),
        );
        ChangeRecord {
            seq,
            at_ms: 1_000 + seq,
            user_id: "alice".into(),
            session_id: "s\"1".into(),
            mutation_id: format!("m{seq}"),
            event,
            outcome,
            writes: Vec::new(),
        }
    }

    #[test]
    fn lines_round_trip() {
        let r = record(7, "x:ü/..");
        let writes = vec![
            JournalWrite {
                kind: Kind::Node,
                id: "x:ü/..".into(),
                blob: Some(ObjectId([7; 20])),
            },
            JournalWrite {
                kind: Kind::Edge,
                id: "a -[b]-> c".into(),
                blob: None,
            },
        ];
        let mut line = String::new();
        push_line(&mut line, &r, &writes);
        assert!(!line.contains('\n'));
        let back = decode_line(&line).unwrap();
        // The deletions come back as the record's writes, for the owner.
        let mut expected = r.clone();
        expected.writes = vec![Write::EdgeDeleted("a -[b]-> c".into())];
        assert_eq!(back.record, expected);
        assert_eq!(back.writes, writes);
    }

    #[test]
    fn a_node_delete_listing_its_edges_still_reads() {
        let line = r#"{"seq":3,"atMs":5,"userId":"a","sessionId":"s","mutationId":"m","event":{"id":"m","type":"batch.update","data":{"ops":[{"type":"node.delete","data":{"id":"c:a","edges":["c:a -[blocks]-> c:b"]}}]}},"outcome":{"id":"o","type":"update.confirmed","data":{"ref":"m","seq":3,"commit":"","rev":3}},"writes":[{"node":"c:a"},{"edge":"c:a -[blocks]-> c:b"}]}"#;
        let entry = decode_line(line).unwrap();
        assert!(matches!(&entry.record.event.body, Body::BatchUpdate(b) if b.ops.len() == 1));
        assert_eq!(entry.record.writes.len(), 2);
        assert!(decode_line(&line.replace("\"edges\"", "\"edgez\"")).is_err());
    }

    #[test]
    fn message_round_trips_and_has_trailers_last() {
        let changes: Vec<Arc<ChangeRecord>> = (3..6).map(|s| Arc::new(record(s, "n:1"))).collect();
        let mut journal = String::new();
        for c in &changes {
            push_line(&mut journal, c, &[]);
            journal.push('\n');
        }
        let s = summary(&changes);
        assert_eq!(s, "alice: node.create n:1, +2 more");
        let m = message(&s, &journal, 3, 5, "ep");
        assert!(
            m.ends_with("\n\nGitmind-Seq: 3..5\nGitmind-Epoch: ep\nGitmind-Format: 1\n"),
            "{m}"
        );
        let p = parse_message(&m).unwrap();
        assert_eq!(
            (p.seq_from, p.seq_to, p.epoch, p.lines.len()),
            (3, 5, "ep", 3)
        );
        assert!(parse_message(&m.replace("Gitmind-Seq: 3..5", "Gitmind-Seq: 3..6")).is_err());
        assert!(parse_message("x\n\nGitmind-Epoch: e").is_err());
    }

    #[test]
    fn commit_is_filled_in() {
        let mut r = record(1, "n:1");
        r.fill_commit("abc");
        let Body::NodeCreate(c) = &r.event.body else {
            panic!()
        };
        assert_eq!(c.commit.as_deref(), Some("abc"));
        let Body::UpdateConfirmed(o) = &r.outcome.body else {
            panic!()
        };
        assert_eq!(o.commit, "abc");
    }
}
