//! The peers' protocols (`gitmind-load peers`, perf-reports/peers.md): the
//! y-protocols sync messages that y-websocket and Hocuspocus speak, and
//! the bare relay's frames, over real Yjs v1 updates made with `yrs`.
//!
//! Each update sets one key of a `Y.Map` (the writer's) to a [`Stamp`]:
//! the writer, its update's sequence number and the time it was scheduled,
//! so a subscriber measures delivery latency, loss and duplicates from
//! what the server delivers, as `gitmind-load fanout` does against Gitmind
//! live.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, ensure, Context as _};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::WebSocketStream;
use yrs::block::{ItemContent, HAS_ORIGIN, HAS_PARENT_SUB, HAS_RIGHT_ORIGIN};
use yrs::encoding::read::{Cursor, Read as _};
use yrs::encoding::write::Write as _;
use yrs::sync::protocol::{MSG_AUTH, MSG_SYNC, MSG_SYNC_STEP_1, MSG_SYNC_STEP_2, MSG_SYNC_UPDATE};
use yrs::sync::{Message, SyncMessage};
use yrs::updates::decoder::{Decode as _, Decoder as _, DecoderV1};
use yrs::updates::encoder::{Encode as _, Encoder as _, EncoderV1};
use yrs::{Any, Doc, Map as _, MapRef, StateVector, Transact as _, Update};

use crate::conn::Memo;

/// The root `Y.Map` that writers set their key in.
pub const MAP: &str = "peers";

/// Hocuspocus's message type that answers a sync step 1 without asking
/// for one back (`MessageType.SyncReply`); otherwise a sync message.
const HOCUSPOCUS_SYNC_REPLY: u8 = 4;
/// Hocuspocus's `Auth` sub-type of a client's token (`AuthMessageType.Token`).
const HOCUSPOCUS_TOKEN: u8 = 0;

/// How long a client waits for the server's answer to its sync.
const JOIN_TIMEOUT: Duration = Duration::from_secs(60);

/// A peer's protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Protocol {
    /// y-websocket's server: y-protocols messages on `ws://HOST:PORT/DOC`.
    #[value(name = "y-websocket")]
    YWebsocket,
    /// Hocuspocus: the same messages, each after the document's name (a
    /// lib0 string), after an `Auth` message with an empty token.
    Hocuspocus,
    /// A relay with no logic (`bench/peers/relay.js`): the update frames
    /// of y-websocket, forwarded as bytes to the others on the same path;
    /// no sync, since nothing answers it.
    Relay,
}

impl Protocol {
    /// Its name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::YWebsocket => "y-websocket",
            Protocol::Hocuspocus => "hocuspocus",
            Protocol::Relay => "relay",
        }
    }

    /// The path a client of document `doc` connects to: Hocuspocus names
    /// the document in every message instead.
    pub fn path(self, doc: &str) -> String {
        match self {
            Protocol::Hocuspocus => "/".to_owned(),
            Protocol::YWebsocket | Protocol::Relay => format!("/{doc}"),
        }
    }

    /// One y-protocols message as a frame of this protocol on `doc`.
    pub fn frame(self, doc: &str, message: &Message) -> Vec<u8> {
        let mut encoder = self.encoder(doc);
        message.encode(&mut encoder);
        encoder.to_vec()
    }

    /// The frame of one update.
    pub fn update_frame(self, doc: &str, update: Vec<u8>) -> Vec<u8> {
        self.frame(doc, &Message::Sync(SyncMessage::Update(update)))
    }

    /// Hocuspocus's `Auth` message with an empty token: it holds every
    /// other message of the document until this one (without an
    /// `onAuthenticate` hook any token passes).
    pub fn auth_frame(self, doc: &str) -> Vec<u8> {
        let mut encoder = self.encoder(doc);
        encoder.write_var(MSG_AUTH);
        encoder.write_var(HOCUSPOCUS_TOKEN);
        encoder.write_string("");
        encoder.to_vec()
    }

    /// An encoder with Hocuspocus's document name already written.
    fn encoder(self, doc: &str) -> EncoderV1 {
        let mut encoder = EncoderV1::new();
        if self == Protocol::Hocuspocus {
            encoder.write_string(doc);
        }
        encoder
    }

    /// What a frame from the server is to a client.
    ///
    /// # Errors
    /// The frame is not a message of this protocol, or its update carries
    /// no [`Stamp`].
    pub fn receive(self, frame: &[u8]) -> anyhow::Result<Received> {
        let mut decoder = DecoderV1::new(Cursor::new(frame));
        if self == Protocol::Hocuspocus {
            decoder.read_string().context("no document name")?;
        }
        let kind: u8 = decoder.read_var()?;
        if kind != MSG_SYNC && !(self == Protocol::Hocuspocus && kind == HOCUSPOCUS_SYNC_REPLY) {
            return Ok(Received::Other(kind));
        }
        Ok(match decoder.read_var::<u8>()? {
            MSG_SYNC_STEP_1 => Received::SyncStep1,
            MSG_SYNC_STEP_2 => Received::SyncStep2,
            MSG_SYNC_UPDATE => Received::Update(stamp_of(decoder.read_buf()?)?),
            other => bail!("unknown sync message {other}"),
        })
    }

    /// [`Protocol::receive`], or what the same bytes were before on this
    /// thread: every subscriber receives the same frame.
    ///
    /// # Errors
    /// As [`Protocol::receive`].
    pub fn receive_cached(self, frame: Bytes) -> anyhow::Result<Received> {
        thread_local! {
            static RECEIVED: RefCell<Memo<Received>> = RefCell::default();
        }
        Memo::decode(&RECEIVED, frame, |bytes| self.receive(bytes))
    }

    /// Brings a client's new connection to document `doc` into sync: for
    /// Hocuspocus an `Auth` message first, then sync step 1 with an empty
    /// state vector, answering the server's own step 1 with an empty step
    /// 2, until the server's step 2 comes (as the y-websocket and
    /// Hocuspocus providers do). The relay answers nothing: a connection
    /// is in its room once open.
    ///
    /// # Errors
    /// The connection failed or closed, or no step 2 came within a minute.
    pub async fn join(self, ws: &mut WebSocketStream<TcpStream>, doc: &str) -> anyhow::Result<()> {
        if self == Protocol::Relay {
            return Ok(());
        }
        if self == Protocol::Hocuspocus {
            ws.send(WsMessage::Binary(self.auth_frame(doc).into()))
                .await?;
        }
        let step1 = Message::Sync(SyncMessage::SyncStep1(StateVector::default()));
        ws.send(WsMessage::Binary(self.frame(doc, &step1).into()))
            .await?;
        tokio::time::timeout(JOIN_TIMEOUT, self.until_synced(ws, doc))
            .await
            .context("no sync step 2 within a minute")?
    }

    /// Reads until the server's sync step 2, answering its step 1.
    async fn until_synced(
        self,
        ws: &mut WebSocketStream<TcpStream>,
        doc: &str,
    ) -> anyhow::Result<()> {
        while let Some(message) = ws.next().await {
            let WsMessage::Binary(bytes) = message? else {
                continue;
            };
            match self.receive(&bytes)? {
                Received::SyncStep2 => return Ok(()),
                Received::SyncStep1 => {
                    let empty = Update::EMPTY_V1.to_vec();
                    let step2 = Message::Sync(SyncMessage::SyncStep2(empty));
                    ws.send(WsMessage::Binary(self.frame(doc, &step2).into()))
                        .await?;
                }
                Received::Update(_) | Received::Other(_) => {}
            }
        }
        bail!("closed before sync step 2")
    }
}

/// A frame from the server, as a client sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    /// An update, with the stamp its writer set.
    Update(Stamp),
    /// The server's sync step 1 (its state vector): a client answers it.
    SyncStep1,
    /// The server's sync step 2: the client is in sync.
    SyncStep2,
    /// Anything else, by its message type (awareness, Hocuspocus's `Auth`
    /// answer and `SyncStatus`).
    Other(u8),
}

/// What each update carries: who wrote it, its place in the writer's
/// sequence, and when it was scheduled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// The writer's index.
    pub writer: u32,
    /// The update's number at its writer, from 0.
    pub seq: u64,
    /// When it was scheduled, in microseconds since the generator's start.
    pub at_us: u64,
}

impl Stamp {
    /// The stamp as a Yjs value: a map of three numbers.
    fn to_any(self) -> Any {
        let fields = [
            ("writer", f64::from(self.writer)),
            ("seq", self.seq as f64),
            ("at_us", self.at_us as f64),
        ];
        let map: HashMap<String, Any> = fields
            .into_iter()
            .map(|(k, v)| (k.to_owned(), Any::Number(v)))
            .collect();
        Any::Map(Arc::new(map))
    }

    /// The stamp in a Yjs value, which a server may have encoded again
    /// (Yjs in JavaScript writes whole numbers as integers).
    fn from_any(any: &Any) -> Option<Stamp> {
        let Any::Map(map) = any else { return None };
        let field = |key: &str| match map.get(key)? {
            Any::Number(n) if *n >= 0.0 && n.fract() == 0.0 => Some(*n as u64),
            Any::BigInt(n) => u64::try_from(*n).ok(),
            _ => None,
        };
        Some(Stamp {
            writer: u32::try_from(field("writer")?).ok()?,
            seq: field("seq")?,
            at_us: field("at_us")?,
        })
    }
}

/// What a subscriber expects next from each writer, to count what went
/// missing and what came twice.
#[derive(Debug, Clone)]
pub struct Expected {
    /// The `seq` expected next, by writer.
    next: Vec<u64>,
}

/// An update checked against [`Expected`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// New, after `lost` of its writer's updates that never came.
    New {
        /// Updates skipped.
        lost: u64,
    },
    /// Seen before (or older than one seen).
    Duplicate,
    /// From a writer this run does not have.
    Stranger,
}

impl Expected {
    /// Expects update 0 from each of `writers` writers.
    pub fn new(writers: usize) -> Self {
        Expected {
            next: vec![0; writers],
        }
    }

    /// Checks `stamp` and moves past it.
    pub fn see(&mut self, stamp: &Stamp) -> Seen {
        let Some(next) = self.next.get_mut(stamp.writer as usize) else {
            return Seen::Stranger;
        };
        if stamp.seq < *next {
            return Seen::Duplicate;
        }
        let lost = stamp.seq - *next;
        *next = stamp.seq + 1;
        Seen::New { lost }
    }
}

/// The stamp a writer's update carries: the value of the one item it
/// inserts.
///
/// The whole update is decoded by `yrs` first; `yrs` keeps its blocks
/// private, so the item is then read again with `yrs`'s own decoder,
/// field by field as `Update::decode` reads it (origins, parent, key,
/// content).
///
/// # Errors
/// Not a Yjs v1 update, or not one item whose value is a stamp.
pub fn stamp_of(update: &[u8]) -> anyhow::Result<Stamp> {
    Update::decode_v1(update).context("not a Yjs v1 update")?;
    let mut decoder = DecoderV1::new(Cursor::new(update));
    let clients: u32 = decoder.read_var()?;
    ensure!(
        clients == 1,
        "an update of {clients} clients, not one writer"
    );
    let blocks: u32 = decoder.read_var()?;
    ensure!(blocks >= 1, "an update with no block");
    decoder.read_client()?;
    let _clock: u32 = decoder.read_var()?;
    let info = decoder.read_info()?;
    // Content types 1 to 9 are items; 0 is a GC range and 10 a skip.
    ensure!(
        !matches!(info & 0b1_1111, 0 | 10),
        "the update's first block is not an item"
    );
    if info & HAS_ORIGIN != 0 {
        decoder.read_left_id()?;
    }
    if info & HAS_RIGHT_ORIGIN != 0 {
        decoder.read_right_id()?;
    }
    if info & (HAS_ORIGIN | HAS_RIGHT_ORIGIN) == 0 {
        if decoder.read_parent_info()? {
            decoder.read_string()?;
        } else {
            decoder.read_left_id()?;
        }
        if info & HAS_PARENT_SUB != 0 {
            decoder.read_string()?;
        }
    }
    let ItemContent::Any(values) = ItemContent::decode(&mut decoder, info)? else {
        bail!("the item holds no value");
    };
    values
        .first()
        .and_then(Stamp::from_any)
        .context("the value is not a stamp")
}

/// A writer's Yjs document: each update sets the writer's key of the
/// [`MAP`] to a new [`Stamp`].
pub struct Writer {
    doc: Doc,
    map: MapRef,
    /// `w{writer}`.
    key: String,
    writer: u32,
    seq: u64,
}

impl Writer {
    /// Writer number `writer`, with a document of its own (a random
    /// client id, as a Yjs client has).
    pub fn new(writer: u32) -> Self {
        let doc = Doc::new();
        let map = doc.get_or_insert_map(MAP);
        Writer {
            doc,
            map,
            key: format!("w{writer}"),
            writer,
            seq: 0,
        }
    }

    /// The Yjs v1 update of the next change, scheduled at `at_us`.
    pub fn next_update(&mut self, at_us: u64) -> Vec<u8> {
        let stamp = Stamp {
            writer: self.writer,
            seq: self.seq,
            at_us,
        };
        self.seq += 1;
        let mut txn = self.doc.transact_mut();
        self.map.insert(&mut txn, self.key.as_str(), stamp.to_any());
        txn.encode_update_v1()
    }
}

#[cfg(test)]
mod tests {
    use yrs::{Map as _, Out, Text as _};

    use super::*;

    /// The updates a writer makes are real Yjs updates: another document
    /// that applies them in order holds the last stamp under the writer's
    /// key, and each one yields its own stamp.
    #[test]
    fn updates_apply_in_yrs_and_yield_their_stamps() -> anyhow::Result<()> {
        let mut writer = Writer::new(3);
        let replica = Doc::new();
        let map = replica.get_or_insert_map(MAP);
        for (seq, at_us) in [(0, 1_000), (1, 2_500), (2, 9_000_000_123)] {
            let update = writer.next_update(at_us);
            assert_eq!(
                stamp_of(&update)?,
                Stamp {
                    writer: 3,
                    seq,
                    at_us
                }
            );
            replica
                .transact_mut()
                .apply_update(Update::decode_v1(&update)?)?;
            let txn = replica.transact();
            let Some(Out::Any(value)) = map.get(&txn, "w3") else {
                panic!("no value under w3 after update {seq}");
            };
            assert_eq!(
                Stamp::from_any(&value).map(|s| (s.seq, s.at_us)),
                Some((seq, at_us))
            );
        }
        Ok(())
    }

    /// A server that applies the update and encodes its own (as
    /// y-websocket and Hocuspocus do) delivers the same stamp.
    #[test]
    fn a_server_reencoded_update_yields_the_same_stamp() -> anyhow::Result<()> {
        let mut writer = Writer::new(7);
        let server = Doc::new();
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = seen.clone();
        let _sub = server.observe_update_v1(move |_, event| {
            if let Ok(mut seen) = sink.lock() {
                seen.push(event.update.clone());
            }
        });
        for at_us in [10, 20] {
            let update = writer.next_update(at_us);
            server
                .transact_mut()
                .apply_update(Update::decode_v1(&update)?)?;
        }
        let seen = seen.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
        let stamps: Vec<Stamp> = seen.iter().map(|u| stamp_of(u)).collect::<Result<_, _>>()?;
        assert_eq!(
            stamps,
            [
                Stamp {
                    writer: 7,
                    seq: 0,
                    at_us: 10
                },
                Stamp {
                    writer: 7,
                    seq: 1,
                    at_us: 20
                }
            ]
        );
        Ok(())
    }

    /// Gaps in a writer's sequence count as lost, repeats as duplicates,
    /// each writer apart.
    #[test]
    fn expected_counts_gaps_and_repeats_per_writer() {
        let stamp = |writer, seq| Stamp {
            writer,
            seq,
            at_us: 0,
        };
        let mut expected = Expected::new(2);
        assert_eq!(expected.see(&stamp(0, 0)), Seen::New { lost: 0 });
        assert_eq!(expected.see(&stamp(1, 0)), Seen::New { lost: 0 });
        assert_eq!(expected.see(&stamp(0, 3)), Seen::New { lost: 2 });
        assert_eq!(expected.see(&stamp(0, 3)), Seen::Duplicate);
        assert_eq!(expected.see(&stamp(0, 1)), Seen::Duplicate);
        assert_eq!(expected.see(&stamp(1, 1)), Seen::New { lost: 0 });
        assert_eq!(expected.see(&stamp(2, 0)), Seen::Stranger);
    }

    /// Whole numbers as Yjs in JavaScript writes them (integers, or
    /// BigInt) are read; anything else is no stamp.
    #[test]
    fn stamps_read_integers_and_refuse_other_values() {
        let map = |v: Any| {
            Any::Map(Arc::new(HashMap::from([
                ("writer".to_owned(), Any::BigInt(2)),
                ("seq".to_owned(), Any::Number(5.0)),
                ("at_us".to_owned(), v),
            ])))
        };
        assert_eq!(
            Stamp::from_any(&map(Any::BigInt(77))),
            Some(Stamp {
                writer: 2,
                seq: 5,
                at_us: 77
            })
        );
        assert_eq!(Stamp::from_any(&map(Any::Number(1.5))), None);
        assert_eq!(Stamp::from_any(&map(Any::Number(-1.0))), None);
        assert_eq!(Stamp::from_any(&map(Any::String("7".into()))), None);
        assert_eq!(Stamp::from_any(&Any::Number(7.0)), None);
    }

    /// Updates that are not a writer's, and bytes that are no update, are
    /// refused with an error, not a wrong stamp.
    #[test]
    fn other_updates_are_refused() {
        assert!(stamp_of(&[0xff, 0x01]).is_err());
        assert!(stamp_of(Update::EMPTY_V1).is_err());
        let doc = Doc::new();
        let text = doc.get_or_insert_text("t");
        let mut txn = doc.transact_mut();
        text.insert(&mut txn, 0, "hello");
        assert!(stamp_of(&txn.encode_update_v1()).is_err());
    }

    /// The frames are y-protocols messages: `[0 sync, 2 update, buf]`,
    /// which `yrs` decodes as the update written; Hocuspocus's begin with
    /// the document's name, and its `Auth` is `[name, 2, 0 token, ""]`.
    #[test]
    fn frames_are_y_protocols_messages() -> anyhow::Result<()> {
        let update = Writer::new(1).next_update(42);
        let frame = Protocol::YWebsocket.update_frame("doc", update.clone());
        assert_eq!(frame[..2], [MSG_SYNC, MSG_SYNC_UPDATE]);
        assert_eq!(
            Message::decode_v1(&frame)?,
            Message::Sync(SyncMessage::Update(update.clone()))
        );
        assert_eq!(
            Protocol::Relay.update_frame("doc", update.clone()),
            frame,
            "the relay carries y-websocket's frames"
        );
        let stamp = Stamp {
            writer: 1,
            seq: 0,
            at_us: 42,
        };
        assert_eq!(
            Protocol::YWebsocket.receive(&frame)?,
            Received::Update(stamp)
        );

        let hocuspocus = Protocol::Hocuspocus.update_frame("doc", update.clone());
        assert_eq!(hocuspocus[..4], [3, b'd', b'o', b'c']);
        assert_eq!(hocuspocus[4..], frame[..]);
        assert_eq!(
            Protocol::Hocuspocus.receive(&hocuspocus)?,
            Received::Update(stamp)
        );
        assert_eq!(
            Protocol::YWebsocket.receive(&hocuspocus)?,
            Received::Other(3),
            "without reading the name first, the name's length is taken for the type"
        );
        assert_eq!(
            Protocol::Hocuspocus.auth_frame("doc"),
            [3, b'd', b'o', b'c', MSG_AUTH, 0, 0]
        );
        Ok(())
    }

    /// What a client does with each of the servers' other messages: sync
    /// steps are told apart, Hocuspocus's `SyncReply` (4) is a sync
    /// message and its `SyncStatus` (8) and awareness are passed over.
    #[test]
    fn sync_steps_and_other_messages_are_told_apart() -> anyhow::Result<()> {
        let step1 = Message::Sync(SyncMessage::SyncStep1(StateVector::default()));
        let step2 = Message::Sync(SyncMessage::SyncStep2(Update::EMPTY_V1.to_vec()));
        for protocol in [Protocol::YWebsocket, Protocol::Hocuspocus] {
            assert_eq!(
                protocol.receive(&protocol.frame("d", &step1))?,
                Received::SyncStep1
            );
            assert_eq!(
                protocol.receive(&protocol.frame("d", &step2))?,
                Received::SyncStep2
            );
            assert_eq!(
                protocol.receive(&protocol.frame("d", &Message::AwarenessQuery))?,
                Received::Other(3)
            );
        }
        let mut reply = vec![1, b'd', HOCUSPOCUS_SYNC_REPLY];
        reply.extend_from_slice(&Protocol::YWebsocket.frame("d", &step1)[1..]);
        assert_eq!(Protocol::Hocuspocus.receive(&reply)?, Received::SyncStep1);
        assert_eq!(
            Protocol::Hocuspocus.receive(&[1, b'd', 8, 1])?,
            Received::Other(8)
        );
        assert!(Protocol::YWebsocket.receive(&[MSG_SYNC, 9]).is_err());
        Ok(())
    }
}
