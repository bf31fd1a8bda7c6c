//! What the attackers send: `graph.sync` requests, presence, and junk
//! frames of every kind the protocol refuses (docs/protocol.md 10.2).

use bytes::Bytes;
use gitmind_bench::conn::{batch_message_of, message_of, Codec};
use gitmind_schema::binary::{self, Compression};
use gitmind_schema::message::{
    CursorMove, GraphSync, PresenceStatus, SelectionChange, UserPresence,
};
use gitmind_schema::{Body, Envelope, ErrorCode};
use rand::RngCore as _;
use tokio_tungstenite::tungstenite::Message;

/// Two `graph.sync` requests for a snapshot (neither `since` nor `epoch`)
/// in one frame: the second always comes while the first is on its way,
/// however fast the server answers, so the flood meets the limit of one
/// sync at a time on any machine.
pub fn sync_request(codec: Codec, serial: u64) -> anyhow::Result<Message> {
    let request = |n| {
        Envelope::new(
            format!("s{serial}-{n}"),
            Body::GraphSync(GraphSync::default()),
        )
    };
    batch_message_of(codec, &[request(1), request(2)])
}

/// The `serial`-th message of a presence storm: a cursor move, a selection
/// and a presence change in turn, each different from the one before.
pub fn presence(codec: Codec, serial: u64) -> anyhow::Result<Message> {
    let id = format!("p{serial}");
    let body = match serial % 3 {
        0 => Body::CursorMove(CursorMove {
            x: serial as f64,
            y: -(serial as f64),
            node_id: None,
        }),
        1 => Body::SelectionChange(SelectionChange {
            nodes: vec![format!("storm:{}", serial % 1000)],
            edges: Vec::new(),
        }),
        _ => Body::UserPresence(UserPresence {
            status: if serial % 2 == 0 {
                PresenceStatus::Active
            } else {
                PresenceStatus::Idle
            },
            focus: Some(format!("storm:{}", serial % 1000)),
            display_name: None,
            color: None,
            chaos_affinity: None,
        }),
    };
    message_of(codec, &Envelope::new(id, body))
}

/// The kinds of junk a bad-frame attacker cycles through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Junk {
    /// A text frame that is not JSON.
    NotJson,
    /// A JSON message of a type nobody knows.
    UnknownType,
    /// JSON that is not an object.
    NotAnObject,
    /// JSON nested deeper than the limit.
    TooDeep,
    /// A binary frame whose header byte sets reserved bits.
    ReservedHeader,
    /// A binary frame of random bytes after a plain header.
    Garbage,
    /// A small zstd frame that would decompress past the frame limit.
    ZstdBomb,
    /// A mutation whose data does not decode: settled by a rollback.
    BadMutation,
}

/// What the server answers to one piece of [`Junk`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// `system.error` with this code.
    Error(ErrorCode),
    /// `update.rollback`.
    Rollback,
}

impl Junk {
    /// Every kind, in the order the attacker sends them.
    pub const CYCLE: [Junk; 8] = [
        Junk::NotJson,
        Junk::UnknownType,
        Junk::NotAnObject,
        Junk::TooDeep,
        Junk::ReservedHeader,
        Junk::Garbage,
        Junk::ZstdBomb,
        Junk::BadMutation,
    ];

    /// What the protocol says the server answers (docs/protocol.md 10.2, 4.1).
    pub fn answer(self) -> Answer {
        match self {
            Junk::NotJson | Junk::ReservedHeader | Junk::Garbage => {
                Answer::Error(ErrorCode::BadFrame)
            }
            Junk::UnknownType => Answer::Error(ErrorCode::UnknownType),
            Junk::NotAnObject => Answer::Error(ErrorCode::Invalid),
            Junk::TooDeep | Junk::ZstdBomb => Answer::Error(ErrorCode::TooLarge),
            Junk::BadMutation => Answer::Rollback,
        }
    }
}

/// The junk frames, made once: the random and compressed ones cost
/// something to make, and the attacker sends thousands a second.
pub struct Junkyard {
    too_deep: String,
    reserved: Bytes,
    garbage: Bytes,
    bomb: Bytes,
    oversized: Bytes,
}

impl Junkyard {
    /// Junk for a server whose frame limit is `max_frame_bytes` and whose
    /// JSON nesting limit is `max_depth`.
    pub fn new(max_frame_bytes: usize, max_depth: usize) -> Self {
        let mut rng = rand::rng();
        let mut random = |header: u8, len: usize| {
            let mut bytes = vec![0u8; len];
            rng.fill_bytes(&mut bytes);
            bytes[0] = header;
            Bytes::from(bytes)
        };
        let depth = max_depth + 8;
        let bomb = Envelope::new(
            "bomb",
            Body::CursorMove(CursorMove {
                x: 0.0,
                y: 0.0,
                node_id: Some("a".repeat(2 * max_frame_bytes)),
            }),
        );
        Junkyard {
            too_deep: format!("{}{}", "[".repeat(depth), "]".repeat(depth)),
            reserved: random(0x80, 64),
            garbage: random(0x00, 64),
            bomb: binary::encode_with(&[bomb], Compression::Always),
            oversized: random(0x00, max_frame_bytes + 1),
        }
    }

    /// The frame of `junk`; `serial` makes ids unique.
    pub fn frame(&self, junk: Junk, serial: u64) -> Message {
        match junk {
            Junk::NotJson => Message::text("{not json"),
            Junk::UnknownType => Message::text(format!(
                r#"{{"id":"j{serial}","type":"no.such.type","data":{{}}}}"#
            )),
            Junk::NotAnObject => Message::text(r#""just a string""#),
            Junk::TooDeep => Message::text(self.too_deep.clone()),
            Junk::ReservedHeader => Message::Binary(self.reserved.clone()),
            Junk::Garbage => Message::Binary(self.garbage.clone()),
            Junk::ZstdBomb => Message::Binary(self.bomb.clone()),
            Junk::BadMutation => Message::text(format!(
                r#"{{"id":"m{serial}","type":"node.create","data":{{"baseSeq":"x","node":{{"id":7}}}}}}"#
            )),
        }
    }

    /// A binary frame one byte over the frame limit on the wire: the
    /// server closes the connection with 1009 (docs/protocol.md 10.4).
    pub fn oversized(&self) -> Message {
        Message::Binary(self.oversized.clone())
    }

    /// The compressed size of the zstd bomb, for the report.
    pub fn bomb_bytes(&self) -> usize {
        self.bomb.len()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use gitmind_schema::{json, DecodeError, Limits};

    /// What the server's decoders make of a frame, as the answer it gives.
    fn answer_to(message: &Message, limits: &Limits) -> Option<Answer> {
        let decoded = match message {
            Message::Text(text) => json::decode(text.as_str(), limits),
            Message::Binary(bytes) => binary::decode(bytes, limits),
            _ => return None,
        };
        let refused = |e: &DecodeError| match e.failed_mutation() {
            Some(_) => Answer::Rollback,
            None => Answer::Error(e.code),
        };
        match decoded {
            Err(e) => Some(refused(&e)),
            Ok(envelopes) => match envelopes.as_slice() {
                [Err(e)] => Some(refused(e)),
                _ => None,
            },
        }
    }

    #[test]
    fn every_kind_of_junk_is_refused_as_the_protocol_says() {
        let limits = Limits::default();
        let yard = Junkyard::new(limits.max_frame_bytes, limits.max_depth);
        for junk in Junk::CYCLE {
            let frame = yard.frame(junk, 7);
            assert_eq!(
                answer_to(&frame, &limits),
                Some(junk.answer()),
                "{junk:?} is answered otherwise"
            );
        }
        assert!(
            yard.bomb_bytes() < limits.max_frame_bytes / 100,
            "the zstd bomb is {} bytes: not a bomb",
            yard.bomb_bytes()
        );
        let Message::Binary(oversized) = yard.oversized() else {
            panic!("the oversized frame is binary");
        };
        assert!(oversized.len() > limits.max_frame_bytes);
    }

    #[test]
    fn attack_messages_are_valid_and_each_different() {
        let limits = Limits::default();
        for codec in [Codec::Binary, Codec::Json] {
            let mut seen = std::collections::HashSet::new();
            for serial in 0..6 {
                for message in [
                    sync_request(codec, serial).unwrap(),
                    presence(codec, serial).unwrap(),
                ] {
                    assert_eq!(answer_to(&message, &limits), None, "{message:?}");
                    assert!(seen.insert(message.into_data()));
                }
            }
        }
    }
}
