//! The JSON codec (docs/protocol.md 2.1): a text frame holds one envelope or an
//! array of them.
//!
//! Decoding is bounded before anything is parsed: the frame size, the
//! nesting depth and the number of envelopes. A frame that is not JSON at
//! all fails as a whole (`bad_frame`); inside an array, each envelope
//! succeeds or fails on its own, so one bad message does not cost the
//! others.

use bytes::{BufMut, Bytes, BytesMut};
use serde::de::Error as _;
use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::error::DecodeError;
use crate::limits::Limits;
use crate::message::{Body, Envelope, ErrorCode, MessageType, Metadata, PROTOCOL_VERSION};

/// The longest envelope `id` in bytes.
pub const MAX_ID_BYTES: usize = 64;

/// Whether an envelope `id` has a valid length: 1 to [`MAX_ID_BYTES`] bytes.
pub(crate) fn is_valid_id(id: &str) -> bool {
    (1..=MAX_ID_BYTES).contains(&id.len())
}

/// Decodes a text frame into its envelopes.
///
/// # Errors
/// The outer `Err` refuses the whole frame: over the size limit or nested
/// too deep (`too_large`), more envelopes than allowed (`too_large`), or not
/// JSON (`bad_frame`). Each inner `Err` is one envelope that could not be
/// taken (`invalid`, `unknown_type`, or `too_large` for a batch of more ops
/// than [`Limits::max_envelopes`]), with its `id` when it had one.
pub fn decode(
    text: &str,
    limits: &Limits,
) -> Result<Vec<Result<Envelope, DecodeError>>, DecodeError> {
    if text.len() > limits.max_frame_bytes {
        return Err(DecodeError::too_large(format!(
            "frame of {} bytes is over the limit of {} bytes",
            text.len(),
            limits.max_frame_bytes
        )));
    }
    check_depth(text.as_bytes(), limits.max_depth)?;
    let trimmed = text.trim_start();
    if trimmed.starts_with('[') {
        let raws: Vec<&RawValue> = serde_json::from_str(text).map_err(|e| {
            DecodeError::bad_frame(format!("frame is not a JSON array of messages: {e}"))
        })?;
        if raws.len() > limits.max_envelopes {
            return Err(DecodeError::too_large(format!(
                "frame holds {} messages; the limit is {}",
                raws.len(),
                limits.max_envelopes
            )));
        }
        Ok(raws
            .into_iter()
            .map(|raw| within_limits(decode_envelope(raw.get()), limits))
            .collect())
    } else {
        let raw: &RawValue = serde_json::from_str(text)
            .map_err(|e| DecodeError::bad_frame(format!("frame is not JSON: {e}")))?;
        Ok(vec![within_limits(decode_envelope(raw.get()), limits)])
    }
}

/// Refuses a batch of more ops than [`Limits::max_envelopes`] allows
/// (`too_large`), as the binary codec does.
pub(crate) fn within_limits(
    decoded: Result<Envelope, DecodeError>,
    limits: &Limits,
) -> Result<Envelope, DecodeError> {
    let env = decoded?;
    if let Body::BatchUpdate(batch) = &env.body {
        if batch.ops.len() > limits.max_envelopes {
            return Err(DecodeError::too_large(format!(
                "batch holds {} ops; the limit is {}",
                batch.ops.len(),
                limits.max_envelopes
            ))
            .of_message(env.id, MessageType::BatchUpdate));
        }
    }
    Ok(env)
}

/// Decodes a frame that must hold exactly one envelope (a convenience for
/// clients and tests).
///
/// # Errors
/// As [`decode`], and `invalid` when the frame holds a batch.
pub fn decode_one(text: &str, limits: &Limits) -> Result<Envelope, DecodeError> {
    let mut all = decode(text, limits)?;
    if all.len() != 1 {
        return Err(DecodeError::invalid(format!(
            "expected one message, found {}",
            all.len()
        )));
    }
    all.pop()
        .unwrap_or_else(|| Err(DecodeError::invalid("empty frame")))
}

/// Encodes one envelope as a text frame.
pub fn encode(envelope: &Envelope) -> Bytes {
    let mut out = BytesMut::with_capacity(256).writer();
    // Writing to memory cannot fail, and every type here serializes.
    #[allow(clippy::expect_used)]
    serde_json::to_writer(&mut out, envelope).expect("envelopes always serialize");
    out.into_inner().freeze()
}

/// Encodes several envelopes as one text frame (a JSON array).
pub fn encode_batch(envelopes: &[Envelope]) -> Bytes {
    let mut out = BytesMut::with_capacity(256 * envelopes.len()).writer();
    #[allow(clippy::expect_used)]
    serde_json::to_writer(&mut out, envelopes).expect("envelopes always serialize");
    out.into_inner().freeze()
}

/// Joins envelopes that were each encoded once (by [`encode`]) into one
/// text frame: one envelope as it is, several as a JSON array. This is how a
/// writer batches shared, pre-encoded messages without encoding them again.
pub fn join(parts: &[Bytes]) -> Bytes {
    if let [one] = parts {
        return one.clone();
    }
    let len = parts.iter().map(Bytes::len).sum::<usize>() + parts.len() + 2;
    let mut out = BytesMut::with_capacity(len);
    out.put_u8(b'[');
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            out.put_u8(b',');
        }
        out.put_slice(part);
    }
    out.put_u8(b']');
    out.freeze()
}

/// Refuses JSON nested deeper than `max_depth` without parsing it, so that
/// no input can drive the parser's recursion.
fn check_depth(bytes: &[u8], max_depth: usize) -> Result<(), DecodeError> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in bytes {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max_depth {
                    return Err(DecodeError::too_large(format!(
                        "JSON is nested deeper than {max_depth} levels"
                    )));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// The envelope's fields before its payload is typed.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawEnvelope<'a> {
    #[serde(default)]
    id: Option<String>,
    #[serde(default, rename = "type", borrow)]
    message_type: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    timestamp: Option<u64>,
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    user_id: Option<String>,
    #[serde(default)]
    session_id: Option<String>,
    #[serde(default)]
    seq: Option<u64>,
    #[serde(default, borrow)]
    data: Option<&'a RawValue>,
    #[serde(default)]
    metadata: Option<Metadata>,
}

/// Decodes one envelope from its JSON text.
fn decode_envelope(text: &str) -> Result<Envelope, DecodeError> {
    let raw: RawEnvelope<'_> = serde_json::from_str(text).map_err(|e| {
        let error = DecodeError::invalid(format!(
            "a message must be a JSON object with an id, a type and data: {e}"
        ));
        // A field of the envelope is wrong, but a mutation whose type and
        // id can be read is still settled with a rollback (docs/protocol.md 4.1).
        match serde_json::from_str::<IdAndType<'_>>(text) {
            Ok(IdAndType {
                id: Some(id),
                message_type: Some(name),
            }) if is_valid_id(&id) => match MessageType::from_name(&name) {
                Some(ty) => error.of_message(id, ty),
                None => error.with_reference(Some(id)),
            },
            _ => error,
        }
    })?;
    from_raw(raw)
}

/// The two fields that make a message known, read on their own when the
/// whole envelope does not decode.
#[derive(Deserialize)]
struct IdAndType<'a> {
    #[serde(default)]
    id: Option<String>,
    #[serde(default, rename = "type", borrow)]
    message_type: Option<std::borrow::Cow<'a, str>>,
}

/// Types an envelope: checks its fields, then parses `data` by `type`.
fn from_raw(raw: RawEnvelope<'_>) -> Result<Envelope, DecodeError> {
    let id = raw.id;
    let fail =
        |code, message: String| Err(DecodeError::new(code, message).with_reference(id.clone()));
    let Some(type_name) = raw.message_type else {
        return fail(ErrorCode::Invalid, "message has no `type`".into());
    };
    let Some(message_type) = MessageType::from_name(&type_name) else {
        return fail(
            ErrorCode::UnknownType,
            format!("unknown message type `{type_name}`"),
        );
    };
    let Some(id_ref) = id.as_deref() else {
        return fail(ErrorCode::Invalid, "message has no `id`".into());
    };
    if !is_valid_id(id_ref) {
        return fail(
            ErrorCode::Invalid,
            format!("`id` must be 1 to {MAX_ID_BYTES} bytes"),
        );
    }
    // From here on the message is known: a mutation is settled with a
    // rollback, whatever else is wrong with it.
    let known = |code, message: String| {
        Err(DecodeError::new(code, message).of_message(id_ref.to_owned(), message_type))
    };
    if let Some(version) = raw.version.as_deref() {
        if version != PROTOCOL_VERSION {
            return known(
                ErrorCode::Invalid,
                format!("unsupported protocol version `{version}`; this server speaks `{PROTOCOL_VERSION}`"),
            );
        }
    }
    let data = raw.data.map_or("{}", RawValue::get);
    let body = match Body::from_json_data(message_type, data) {
        Ok(body) => body,
        Err(e) => {
            return known(
                ErrorCode::Invalid,
                format!("bad `data` for `{type_name}`: {e}"),
            )
        }
    };
    Ok(Envelope {
        id: id.unwrap_or_default(),
        timestamp: raw.timestamp,
        version: raw.version,
        user_id: raw.user_id,
        session_id: raw.session_id,
        seq: raw.seq,
        metadata: raw.metadata,
        body,
    })
}

impl Serialize for Envelope {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        /// Lets the payload serialize itself as the `data` value.
        struct Data<'a>(&'a Body);
        impl Serialize for Data<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                self.0.serialize_data(s)
            }
        }
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("id", &self.id)?;
        map.serialize_entry("type", self.type_name())?;
        if let Some(v) = &self.timestamp {
            map.serialize_entry("timestamp", v)?;
        }
        if let Some(v) = &self.version {
            map.serialize_entry("version", v)?;
        }
        if let Some(v) = &self.user_id {
            map.serialize_entry("userId", v)?;
        }
        if let Some(v) = &self.session_id {
            map.serialize_entry("sessionId", v)?;
        }
        if let Some(v) = &self.seq {
            map.serialize_entry("seq", v)?;
        }
        map.serialize_entry("data", &Data(&self.body))?;
        if let Some(v) = &self.metadata {
            map.serialize_entry("metadata", v)?;
        }
        map.end()
    }
}

/// Envelopes nested in a payload (`graph.sync`'s `events`) decode by the
/// same rules as top-level ones.
impl<'de> Deserialize<'de> for Envelope {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = <&RawValue>::deserialize(d)?;
        decode_envelope(raw.get()).map_err(|e| D::Error::custom(e.message))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::message::{NodeCreate, SystemHeartbeat};
    use crate::model::Node;

    fn one(text: &str) -> Result<Envelope, DecodeError> {
        decode_one(text, &Limits::default())
    }

    #[test]
    fn decodes_protocol_example() {
        let env = one(
            r#"{"id":"01JDZ8Q5K3V7","type":"node.create","timestamp":1764158000000,
            "version":"1","userId":"alice","sessionId":"s-9f2c","seq":42,
            "data":{"baseSeq":0,"node":{"id":"concept:x","label":"X"}},
            "metadata":{"clientVersion":"gitmind-cli/0.1","gonzaiState":"curious","region":"r1"}}"#,
        )
        .unwrap();
        assert_eq!(env.id, "01JDZ8Q5K3V7");
        assert_eq!(env.seq, Some(42));
        let Body::NodeCreate(c) = &env.body else {
            panic!("wrong body {:?}", env.body)
        };
        assert_eq!(c.node.label.as_deref(), Some("X"));
        assert_eq!(c.base_seq, Some(0));
    }

    #[test]
    fn encodes_type_and_data_in_place() {
        let env = Envelope::new(
            "a1",
            Body::NodeCreate(NodeCreate {
                base_seq: Some(3),
                node: Node {
                    id: "concept:y".into(),
                    x: Some(2.0),
                    ..Node::default()
                },
                commit: None,
            }),
        );
        let text = encode(&env);
        assert_eq!(
            std::str::from_utf8(&text).unwrap(),
            r#"{"id":"a1","type":"node.create","version":"1","data":{"baseSeq":3,"node":{"id":"concept:y","x":2}}}"#
        );
        assert_eq!(one(std::str::from_utf8(&text).unwrap()).unwrap(), env);
    }

    #[test]
    fn batch_decodes_each_envelope_on_its_own() {
        let all = decode(
            r#"[{"id":"1","type":"system.heartbeat","data":{}},{"id":"2","type":"no.such"},{"id":"3","type":"cursor.move","data":{"x":"a"}}]"#,
            &Limits::default(),
        )
        .unwrap();
        assert!(matches!(
            all[0],
            Ok(Envelope {
                body: Body::SystemHeartbeat(SystemHeartbeat { .. }),
                ..
            })
        ));
        let e1 = all[1].as_ref().unwrap_err();
        assert_eq!(
            (e1.code, e1.reference.as_deref()),
            (ErrorCode::UnknownType, Some("2"))
        );
        assert_eq!(all[2].as_ref().unwrap_err().code, ErrorCode::Invalid);
    }

    #[test]
    fn join_makes_an_array_of_pre_encoded_parts() {
        let a = encode(&Envelope::new(
            "a",
            Body::SystemHeartbeat(SystemHeartbeat::default()),
        ));
        let b = encode(&Envelope::new(
            "b",
            Body::SystemHeartbeat(SystemHeartbeat::default()),
        ));
        let joined = join(&[a.clone(), b]);
        let all = decode(std::str::from_utf8(&joined).unwrap(), &Limits::default()).unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(join(std::slice::from_ref(&a)), a);
    }

    #[test]
    fn refuses_deep_nesting_before_parsing() {
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert_eq!(
            decode(&deep, &Limits::default()).unwrap_err().code,
            ErrorCode::TooLarge
        );
    }

    #[test]
    fn brackets_inside_strings_do_not_count_as_depth() {
        let text = format!(
            r#"{{"id":"x","type":"system.error","data":{{"code":"invalid","message":"{}"}}}}"#,
            "[".repeat(100)
        );
        assert!(one(&text).is_ok());
    }

    #[test]
    fn refuses_oversized_frames_and_too_many_messages() {
        let limits = Limits {
            max_frame_bytes: 10,
            ..Limits::default()
        };
        assert_eq!(
            decode("[1,2,3,4,5,6,7]", &limits).unwrap_err().code,
            ErrorCode::TooLarge
        );
        let many = format!("[{}]", vec!["{}"; 1001].join(","));
        assert_eq!(
            decode(&many, &Limits::default()).unwrap_err().code,
            ErrorCode::TooLarge
        );
    }

    #[test]
    fn not_json_is_bad_frame() {
        assert_eq!(
            decode("{nope", &Limits::default()).unwrap_err().code,
            ErrorCode::BadFrame
        );
        assert_eq!(
            decode("", &Limits::default()).unwrap_err().code,
            ErrorCode::BadFrame
        );
    }

    #[test]
    fn envelope_rules() {
        let code = |t: &str| one(t).unwrap_err().code;
        assert_eq!(code(r#"{"type":"system.heartbeat"}"#), ErrorCode::Invalid);
        assert_eq!(
            code(r#"{"id":"","type":"system.heartbeat"}"#),
            ErrorCode::Invalid
        );
        assert_eq!(
            code(&format!(
                r#"{{"id":"{}","type":"system.heartbeat"}}"#,
                "x".repeat(65)
            )),
            ErrorCode::Invalid
        );
        assert_eq!(
            code(r#"{"id":"1","type":"system.heartbeat","version":"2"}"#),
            ErrorCode::Invalid
        );
        assert_eq!(code(r#"{"id":"1"}"#), ErrorCode::Invalid);
        assert_eq!(code(r#"[1]"#), ErrorCode::Invalid);
        assert_eq!(
            code(r#"{"id":"1","type":"node.update","data":{"id":"a:b","set":{"rev":3}}}"#),
            ErrorCode::Invalid
        );
        assert_eq!(
            code(r#"{"id":"1","type":"cursor.move","data":{"x":1e400,"y":0}}"#),
            ErrorCode::Invalid
        );
        // Unknown envelope fields are ignored (forward compatibility).
        assert!(one(r#"{"id":"1","type":"system.heartbeat","future":true}"#).is_ok());
    }
}
