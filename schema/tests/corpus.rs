//! The shared corpus (`schema/corpus/*.json`): example messages of every
//! type, in both directions where their shapes differ. Each must go
//! JSON -> types -> binary -> types -> JSON unchanged, and each codec's
//! output must be its own fixed point.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::path::PathBuf;

use gitmind_schema::message::{Body, Envelope, MessageType};
use gitmind_schema::{binary, json, Limits};
use serde_json::Value;

/// Every corpus file: its name and text.
fn corpus() -> Vec<(String, String)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 40,
        "corpus in {} has only {} files",
        dir.display(),
        files.len()
    );
    files
        .into_iter()
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read_to_string(&p).unwrap(),
            )
        })
        .collect()
}

/// The envelopes of a JSON frame; every one must decode.
fn decode_json(name: &str, text: &str) -> Vec<Envelope> {
    json::decode(text, &Limits::default())
        .unwrap_or_else(|e| panic!("{name}: frame refused: {e}"))
        .into_iter()
        .map(|r| r.unwrap_or_else(|e| panic!("{name}: message refused: {e}")))
        .collect()
}

/// A frame as JSON text, the way the codec writes it.
fn encode_json(envs: &[Envelope], batch: bool) -> Vec<u8> {
    if batch {
        json::encode_batch(envs).to_vec()
    } else {
        json::encode(&envs[0]).to_vec()
    }
}

/// JSON numbers as f64, so that `1` and `1.0` compare equal.
fn normalize(v: Value) -> Value {
    match v {
        Value::Number(n) => {
            serde_json::Number::from_f64(n.as_f64().unwrap()).map_or(Value::Null, Value::Number)
        }
        Value::Array(a) => Value::Array(a.into_iter().map(normalize).collect()),
        Value::Object(o) => Value::Object(o.into_iter().map(|(k, v)| (k, normalize(v))).collect()),
        other => other,
    }
}

#[test]
fn json_binary_json_is_lossless() {
    for (name, text) in corpus() {
        let batch = text.trim_start().starts_with('[');
        let original = normalize(serde_json::from_str(&text).unwrap());
        let envs = decode_json(&name, &text);
        for compression in [
            binary::Compression::Auto,
            binary::Compression::Never,
            binary::Compression::Always,
        ] {
            let frame = binary::encode_with(&envs, compression);
            let back: Vec<Envelope> = binary::decode(&frame, &Limits::default())
                .unwrap_or_else(|e| panic!("{name}: binary frame refused: {e}"))
                .into_iter()
                .map(|r| r.unwrap_or_else(|e| panic!("{name}: binary message refused: {e}")))
                .collect();
            assert_eq!(
                back, envs,
                "{name}: types differ after binary ({compression:?})"
            );
            let again = normalize(serde_json::from_slice(&encode_json(&back, batch)).unwrap());
            assert_eq!(
                again, original,
                "{name}: JSON differs after binary ({compression:?})"
            );
        }
    }
}

#[test]
fn json_text_is_a_fixed_point_after_one_pass() {
    for (name, text) in corpus() {
        let batch = text.trim_start().starts_with('[');
        let once = encode_json(&decode_json(&name, &text), batch);
        let twice = encode_json(
            &decode_json(&name, std::str::from_utf8(&once).unwrap()),
            batch,
        );
        assert_eq!(
            String::from_utf8_lossy(&once),
            String::from_utf8_lossy(&twice),
            "{name}"
        );
    }
}

#[test]
fn binary_form_is_unique() {
    for (name, text) in corpus() {
        let envs = decode_json(&name, &text);
        let frame = binary::encode_with(&envs, binary::Compression::Never);
        let back: Vec<Envelope> = binary::decode(&frame, &Limits::default())
            .unwrap()
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(
            binary::encode_with(&back, binary::Compression::Never),
            frame,
            "{name}"
        );
    }
}

#[test]
fn corpus_covers_every_message_type() {
    fn visit(env: &Envelope, seen: &mut HashSet<MessageType>) {
        seen.insert(env.body.message_type());
        if let Body::GraphSync(sync) = &env.body {
            for event in sync.events.iter().flatten() {
                visit(event, seen);
            }
        }
    }
    let mut seen = HashSet::new();
    for (name, text) in corpus() {
        for env in decode_json(&name, &text) {
            visit(&env, &mut seen);
        }
    }
    let missing: Vec<_> = MessageType::ALL
        .iter()
        .filter(|t| !seen.contains(t))
        .map(|t| t.name())
        .collect();
    assert!(missing.is_empty(), "no corpus example of {missing:?}");
}
