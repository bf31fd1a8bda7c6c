//! Presence (docs/protocol.md 8), all of it: who is on a graph and what
//! each shows ([`Roster`], kept by the hub), what a session may send
//! ([`validate`]) and how often ([`Throttle`]), and how a shard relays it
//! ([`relay`]).
//!
//! Presence is ephemeral: never persisted, never ordered with the graph's
//! changes, and under load a cursor or selection still waiting for a slow
//! reader is replaced by a newer one. Joins and leaves are never dropped.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use gitmind_owner::SessionKey;
use gitmind_schema::message::{PresenceState, PresenceStatus, UserPresence};
use gitmind_schema::{Body, Codec, DecodeError, Envelope, ErrorCode, MessageType, PerCodec};
use tokio::time::Instant;

use crate::fanout::{Encoded, Member};
use crate::outbox::Outbox;
use crate::stamp::stamped;
use crate::view::View;

/// The sessions on one graph and the presence of each (the hub's), and
/// the notices of joins, leaves and presence changes not yet sent.
///
/// Notices go out together once per tick ([`Roster::take_notices`]), as one
/// digest encoded once for everyone: a thousand arrivals cost every member
/// a few frames, not a thousand. A session's changes within a tick coalesce
/// (the latest wins); joins and leaves never do.
#[derive(Debug)]
pub struct Roster {
    /// Each session's presence is shared with the syncs that list it, so an
    /// arrival in a crowd copies pointers, not the crowd's presence.
    members: HashMap<SessionKey, (Member, Arc<PresenceState>)>,
    /// In a cluster, the sessions of other nodes on the graph
    /// (docs/scale-out.md): listed and noticed like members, never sent to.
    remote: HashMap<SessionKey, Arc<PresenceState>>,
    /// Notices not yet sent, in order, each with the session it is about.
    notices: Vec<(SessionKey, Envelope)>,
    /// Where each session's pending presence change is in `notices`.
    changed: HashMap<SessionKey, usize>,
    /// Sessions per shard, to know which shards to send to.
    per_shard: Vec<usize>,
    /// Sessions per codec, to encode only what is used.
    per_codec: PerCodec<usize>,
    /// Of those, the sessions that see the whole graph, per codec.
    seeing_all: PerCodec<usize>,
    /// The other views on the graph, with their sessions per codec.
    views: Vec<(Arc<View>, PerCodec<usize>)>,
}

impl Roster {
    /// An empty roster on a server of `shards` shards.
    pub fn new(shards: usize) -> Self {
        Roster {
            members: HashMap::new(),
            remote: HashMap::new(),
            notices: Vec::new(),
            changed: HashMap::new(),
            per_shard: vec![0; shards],
            per_codec: PerCodec::default(),
            seeing_all: PerCodec::default(),
            views: Vec::new(),
        }
    }

    /// Adds a session, present and active, with a `joined` notice.
    pub fn join(&mut self, member: Member) {
        let state = Arc::new(PresenceState {
            user_id: member.user_id.clone(),
            session_id: member.session_id.clone(),
            presence: status(PresenceStatus::Active),
            cursor: None,
            selection: None,
        });
        self.per_shard[member.shard] += 1;
        self.per_codec[member.codec] += 1;
        self.count_view(&member, 1);
        let joined = notice(member.session, &state, joined());
        self.notices.push((member.session, joined));
        self.members.insert(member.session, (member, state));
    }

    /// Removes a session, with a `left` notice; `false` if it was not here.
    pub fn leave(&mut self, session: SessionKey) -> bool {
        let Some((member, state)) = self.members.remove(&session) else {
            return false;
        };
        self.per_shard[member.shard] -= 1;
        self.per_codec[member.codec] -= 1;
        self.count_view(&member, -1);
        self.changed.remove(&session);
        let left = notice(session, &state, left());
        self.notices.push((session, left));
        true
    }

    /// Adds a session of another node, with a `joined` notice (and one of
    /// its presence when it is not `active`); `false` if it was here.
    pub fn arrive(&mut self, session: SessionKey, state: PresenceState) -> bool {
        if self.remote.contains_key(&session) {
            return false;
        }
        let presence = state.presence.clone();
        let state = Arc::new(state);
        self.notices
            .push((session, notice(session, &state, joined())));
        self.remote.insert(session, state);
        if presence.status != PresenceStatus::Active {
            self.update(session, Body::UserPresence(presence));
        }
        true
    }

    /// Removes a session of another node, with a `left` notice; `false` if
    /// it was not here.
    pub fn depart(&mut self, session: SessionKey) -> bool {
        let Some(state) = self.remote.remove(&session) else {
            return false;
        };
        self.changed.remove(&session);
        let left = notice(session, &state, left());
        self.notices.push((session, left));
        true
    }

    /// A session of another node, as last heard of.
    pub fn remote(&self, session: SessionKey) -> Option<&PresenceState> {
        self.remote.get(&session).map(|s| &**s)
    }

    /// The sessions of other nodes.
    pub fn remote_sessions(&self) -> impl Iterator<Item = SessionKey> + '_ {
        self.remote.keys().copied()
    }

    /// This node's sessions with their presence (no cursor nor selection),
    /// for the other nodes.
    pub fn local(&self) -> Vec<(SessionKey, PresenceState)> {
        self.members
            .iter()
            .map(|(&session, (_, state))| {
                let state = PresenceState {
                    user_id: state.user_id.clone(),
                    session_id: state.session_id.clone(),
                    presence: state.presence.clone(),
                    cursor: None,
                    selection: None,
                };
                (session, state)
            })
            .collect()
    }

    /// Records what a session (of this node or another) shows
    /// (`user.presence`, `cursor.move` or `selection.change`, already
    /// validated). A presence change waits for the next digest; a cursor
    /// or selection is returned, to relay to the others now. `None` as
    /// well if the session is not here.
    pub fn update(&mut self, session: SessionKey, body: Body) -> Option<Envelope> {
        let state = match self.members.get_mut(&session) {
            Some((_, state)) => state,
            None => self.remote.get_mut(&session)?,
        };
        // A sync still on its way keeps the presence it was given.
        let state = Arc::make_mut(state);
        match &body {
            Body::UserPresence(p) => {
                state.presence = p.clone();
                let change = notice(session, state, body);
                match self.changed.get(&session) {
                    Some(&at) => self.notices[at].1 = change,
                    None => {
                        self.changed.insert(session, self.notices.len());
                        self.notices.push((session, change));
                    }
                }
                return None;
            }
            Body::CursorMove(c) => state.cursor = Some(c.clone()),
            Body::SelectionChange(s) => state.selection = Some(s.clone()),
            _ => return None,
        }
        Some(notice(session, state, body))
    }

    /// This node's sessions that show a `focus`, with their chaos affinity
    /// (0.5 when not given) and their view, for Gonzai.
    pub fn watchers(&self) -> Vec<crate::gonzai::Watcher<'_>> {
        self.members
            .iter()
            .filter_map(|(&session, (member, state))| {
                watcher(session, state, member.view.as_deref())
            })
            .collect()
    }

    /// [`Roster::watchers`] and, in a cluster, the other nodes' sessions
    /// that show a focus: shared suggestions and chaos reach sessions
    /// wherever they are.
    pub fn watchers_everywhere(&self) -> Vec<crate::gonzai::Watcher<'_>> {
        let mut all = self.watchers();
        all.extend(
            self.remote
                .iter()
                .filter_map(|(&session, state)| watcher(session, state, None)),
        );
        all
    }

    /// Whether notices wait for the next digest.
    pub fn has_notices(&self) -> bool {
        !self.notices.is_empty()
    }

    /// The notices since the last digest, in order, each with the session
    /// it is about.
    pub fn take_notices(&mut self) -> Vec<(SessionKey, Envelope)> {
        self.changed.clear();
        std::mem::take(&mut self.notices)
    }

    /// A session on this graph.
    pub fn member(&self, session: SessionKey) -> Option<&Member> {
        self.members.get(&session).map(|(m, _)| m)
    }

    /// What every `graph.sync` carries: the presence of the sessions other
    /// than `session` (docs/protocol.md 6 and 8), of every node.
    pub fn others(&self, session: SessionKey) -> Vec<Arc<PresenceState>> {
        self.members
            .iter()
            .map(|(key, (_, p))| (key, p))
            .chain(&self.remote)
            .filter(|(key, _)| **key != session)
            .map(|(_, p)| Arc::clone(p))
            .collect()
    }

    /// The shards with at least one session here.
    pub fn shards(&self) -> impl Iterator<Item = usize> + '_ {
        self.per_shard
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(shard, _)| shard)
    }

    /// Sessions per codec.
    pub fn codecs(&self) -> PerCodec<usize> {
        self.per_codec
    }

    /// Sessions that see the whole graph, per codec.
    pub fn seeing_all(&self) -> PerCodec<usize> {
        self.seeing_all
    }

    /// The other views on the graph, each with its sessions per codec.
    pub fn views(&self) -> &[(Arc<View>, PerCodec<usize>)] {
        &self.views
    }

    fn count_view(&mut self, member: &Member, by: isize) {
        let counts = match &member.view {
            None => &mut self.seeing_all,
            Some(view) => {
                let at = match self.views.iter().position(|(v, _)| v == view) {
                    Some(at) => at,
                    None => {
                        self.views.push((view.clone(), PerCodec::default()));
                        self.views.len() - 1
                    }
                };
                &mut self.views[at].1
            }
        };
        counts[member.codec] = counts[member.codec].saturating_add_signed(by);
        self.views
            .retain(|(_, c)| c[Codec::Json] + c[Codec::Binary] > 0);
    }
}

/// A `user.presence` of `status` and nothing else.
fn status(status: PresenceStatus) -> UserPresence {
    UserPresence {
        status,
        focus: None,
        display_name: None,
        color: None,
        chaos_affinity: None,
    }
}

/// The body of a `joined` notice.
fn joined() -> Body {
    Body::UserPresence(status(PresenceStatus::Joined))
}

/// The body of a `left` notice.
fn left() -> Body {
    Body::UserPresence(status(PresenceStatus::Left))
}

/// A presence message about `session`, which shows `state`, for the others.
fn notice(session: SessionKey, state: &PresenceState, body: Body) -> Envelope {
    let mut envelope = stamped(format!("p-{session}"), body);
    envelope.user_id = Some(state.user_id.clone());
    envelope.session_id = Some(state.session_id.clone());
    envelope
}

/// Checks an ephemeral message from a client: `invalid` or `too_large`,
/// the message naming the field.
///
/// # Errors
/// What is wrong with it, with its protocol code.
pub fn validate(body: &Body) -> Result<(), DecodeError> {
    fn text(field: &str, value: Option<&String>, max: usize) -> Result<(), DecodeError> {
        match value {
            Some(v) if v.len() > max => Err(DecodeError::new(
                ErrorCode::TooLarge,
                format!("{field} is {} bytes; the limit is {max}", v.len()),
            )),
            Some(v) if v.chars().any(char::is_control) => Err(DecodeError::invalid(format!(
                "{field} has control characters"
            ))),
            _ => Ok(()),
        }
    }
    match body {
        Body::UserPresence(p) => {
            if matches!(p.status, PresenceStatus::Joined | PresenceStatus::Left) {
                return Err(DecodeError::invalid(
                    "user.presence status `joined` and `left` are sent by the server",
                ));
            }
            text("focus", p.focus.as_ref(), 256)?;
            text("displayName", p.display_name.as_ref(), 128)?;
            text("color", p.color.as_ref(), 32)?;
            match p.chaos_affinity {
                Some(a) if !(0.0..=1.0).contains(&a) => Err(DecodeError::invalid(
                    "chaosAffinity must be a number from 0 to 1",
                )),
                _ => Ok(()),
            }
        }
        Body::CursorMove(c) => {
            if !c.x.is_finite() || !c.y.is_finite() {
                return Err(DecodeError::invalid(
                    "cursor x and y must be finite numbers",
                ));
            }
            text("nodeId", c.node_id.as_ref(), 256)
        }
        Body::SelectionChange(s) => {
            let ids = s.nodes.len() + s.edges.len();
            if ids > 1000 {
                return Err(DecodeError::new(
                    ErrorCode::TooLarge,
                    format!("selection has {ids} ids; the limit is 1000"),
                ));
            }
            for id in s.nodes.iter().chain(&s.edges) {
                text("selection id", Some(id), 1024)?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// A session as Gonzai sees it, if it shows a focus.
fn watcher<'a>(
    session: SessionKey,
    state: &'a PresenceState,
    view: Option<&'a View>,
) -> Option<crate::gonzai::Watcher<'a>> {
    Some(crate::gonzai::Watcher {
        session,
        focus: state.presence.focus.as_deref()?,
        chaos_affinity: state.presence.chaos_affinity.unwrap_or(0.5),
        view,
    })
}

/// A session's cursor rate limit (docs/protocol.md 8): at most one relayed
/// per interval; one that comes faster waits, and a newer one replaces it.
#[derive(Debug)]
pub struct Throttle {
    interval: Duration,
    last: Option<Instant>,
    /// Boxed: a `Body` is large, and every session holds three throttles
    /// that are nearly always empty (memory per idle connection).
    pending: Option<Box<Body>>,
}

impl Throttle {
    /// At most `per_second` messages a second.
    pub fn new(per_second: u32) -> Self {
        Throttle {
            interval: Duration::from_millis(1000 / u64::from(per_second.max(1))),
            last: None,
            pending: None,
        }
    }

    /// Offers a message at `now`: returns it when it may go now, else
    /// keeps it (replacing any kept before) for [`Throttle::due`].
    pub fn offer(&mut self, body: Body, now: Instant) -> Option<Body> {
        if self.last.is_some_and(|t| now < t + self.interval) {
            self.pending = Some(Box::new(body));
            return None;
        }
        // Anything kept is older than this one: it must not follow it.
        self.pending = None;
        self.last = Some(now);
        Some(body)
    }

    /// When the kept message may go, if one is kept.
    pub fn deadline(&self) -> Option<Instant> {
        Some(self.last? + self.interval).filter(|_| self.pending.is_some())
    }

    /// The kept message, if its time has come at `now`.
    pub fn due(&mut self, now: Instant) -> Option<Body> {
        if self.deadline().is_some_and(|d| now >= d) {
            self.last = Some(now);
            return self.pending.take().map(|body| *body);
        }
        None
    }
}

/// A session's rate limits on what it shows: cursors at `cursor_rate`,
/// selections and presence changes at `presence_rate` each (docs/protocol.md
/// 8). Each kind keeps only its latest message while it waits.
#[derive(Debug)]
pub struct Throttles {
    cursor: Throttle,
    selection: Throttle,
    presence: Throttle,
}

impl Throttles {
    /// The limits of one session.
    pub fn new(cursor_rate: u32, presence_rate: u32) -> Self {
        Throttles {
            cursor: Throttle::new(cursor_rate),
            selection: Throttle::new(presence_rate),
            presence: Throttle::new(presence_rate),
        }
    }

    /// Offers a validated `cursor.move`, `selection.change` or
    /// `user.presence` at `now`: returns it when it may go now.
    pub fn offer(&mut self, body: Body, now: Instant) -> Option<Body> {
        match body {
            Body::CursorMove(_) => self.cursor.offer(body, now),
            Body::SelectionChange(_) => self.selection.offer(body, now),
            _ => self.presence.offer(body, now),
        }
    }

    /// When the earliest kept message may go.
    pub fn deadline(&self) -> Option<Instant> {
        [&self.cursor, &self.selection, &self.presence]
            .into_iter()
            .filter_map(Throttle::deadline)
            .min()
    }

    /// The kept messages whose time has come at `now`.
    pub fn due(&mut self, now: Instant) -> impl Iterator<Item = Body> + '_ {
        [&mut self.cursor, &mut self.selection, &mut self.presence]
            .into_iter()
            .filter_map(move |t| t.due(now))
    }
}

/// Whether a message of `kind` waiting for a slow reader may be replaced by
/// a newer one from the same sender: cursors and selections, never joins,
/// leaves or status changes, which every client must see.
pub fn coalesces(kind: MessageType) -> bool {
    matches!(kind, MessageType::CursorMove | MessageType::SelectionChange)
}

/// Relays an ephemeral message of session `from` to the outboxes of a
/// shard's other sessions on the graph.
pub fn relay<'a>(
    outboxes: impl Iterator<Item = (SessionKey, &'a Outbox)>,
    from: SessionKey,
    kind: MessageType,
    encoded: &Encoded,
) {
    for (session, outbox) in outboxes {
        if session == from {
            continue;
        }
        if let Some(bytes) = &encoded[outbox.codec] {
            outbox.push_ephemeral(from, kind, bytes.clone(), coalesces(kind));
            outbox.wake();
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use gitmind_schema::message::CursorMove;
    use gitmind_schema::Codec;

    fn member(session: SessionKey, shard: usize, codec: Codec) -> Member {
        Member {
            session,
            shard,
            codec,
            graph: "g".into(),
            user_id: format!("u{session}"),
            session_id: format!("s{session}"),
            view: None,
        }
    }

    fn cursor(x: f64) -> Body {
        Body::CursorMove(CursorMove {
            x,
            y: 0.0,
            node_id: None,
        })
    }

    #[test]
    fn the_roster_counts_shards_and_codecs_and_lists_the_others() {
        let mut roster = Roster::new(2);
        roster.join(member(1, 1, Codec::Json));
        roster.join(member(2, 1, Codec::Binary));
        assert_eq!(roster.shards().collect::<Vec<_>>(), [1]);
        assert_eq!((roster.codecs().json, roster.codecs().bin), (1, 1));
        roster.update(2, cursor(3.0)).unwrap();
        let others = roster.others(1);
        assert_eq!(others.len(), 1);
        assert_eq!(others[0].cursor.as_ref().map(|c| c.x), Some(3.0));
        assert!(roster.leave(2));
        assert!(!roster.leave(2), "a session leaves once");
        assert_eq!(roster.codecs().bin, 0);
    }

    #[test]
    fn sessions_of_other_nodes_are_listed_and_noticed_but_not_members() {
        let mut roster = Roster::new(1);
        roster.join(member(1, 0, Codec::Json));
        roster.take_notices();
        let away = UserPresence {
            status: PresenceStatus::Away,
            ..status(PresenceStatus::Active)
        };
        let state = PresenceState {
            user_id: "r".into(),
            session_id: "sr".into(),
            presence: away.clone(),
            cursor: None,
            selection: None,
        };
        assert!(roster.arrive(9, state.clone()));
        assert!(!roster.arrive(9, state), "arrives once");
        assert!(roster.member(9).is_none(), "never sent to");
        assert_eq!(roster.shards().collect::<Vec<_>>(), [0]);
        assert_eq!(roster.others(1)[0].session_id, "sr");
        assert_eq!(roster.local().len(), 1);
        roster.update(9, cursor(2.0)).unwrap();
        assert_eq!(roster.remote(9).unwrap().cursor.as_ref().unwrap().x, 2.0);
        assert!(roster.depart(9));
        assert!(!roster.depart(9));
        let statuses: Vec<PresenceStatus> = roster
            .take_notices()
            .into_iter()
            .map(|(key, n)| match n.body {
                Body::UserPresence(p) if key == 9 => p.status,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            statuses,
            [
                PresenceStatus::Joined,
                PresenceStatus::Away,
                PresenceStatus::Left
            ]
        );
        assert!(roster.others(1).is_empty());
    }

    #[test]
    fn notices_wait_for_the_digest_and_a_sessions_changes_coalesce() {
        let status = |focus: &str| {
            Body::UserPresence(UserPresence {
                status: PresenceStatus::Away,
                focus: Some(focus.into()),
                display_name: None,
                color: None,
                chaos_affinity: None,
            })
        };
        let mut roster = Roster::new(1);
        roster.join(member(1, 0, Codec::Json));
        roster.join(member(2, 0, Codec::Json));
        assert!(roster.update(1, status("a")).is_none(), "waits");
        roster.update(1, status("b"));
        roster.update(2, status("c"));
        roster.leave(2);
        let kinds: Vec<(String, PresenceStatus, Option<String>)> = roster
            .take_notices()
            .into_iter()
            .map(|(_, n)| match n.body {
                Body::UserPresence(p) => (n.session_id.unwrap(), p.status, p.focus),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            kinds,
            [
                ("s1".into(), PresenceStatus::Joined, None),
                ("s2".into(), PresenceStatus::Joined, None),
                ("s1".into(), PresenceStatus::Away, Some("b".into())),
                ("s2".into(), PresenceStatus::Away, Some("c".into())),
                ("s2".into(), PresenceStatus::Left, None),
            ]
        );
        assert!(!roster.has_notices());
        roster.update(1, status("d"));
        assert_eq!(roster.take_notices().len(), 1, "a new tick starts afresh");
    }

    #[test]
    fn a_bad_presence_gets_its_code_from_the_check_not_its_words() {
        let long = Body::CursorMove(CursorMove {
            x: 0.0,
            y: 0.0,
            node_id: Some("n".repeat(300)),
        });
        assert_eq!(validate(&long).unwrap_err().code, ErrorCode::TooLarge);
        assert_eq!(
            validate(&cursor(f64::NAN)).unwrap_err().code,
            ErrorCode::Invalid
        );
    }

    #[test]
    fn the_throttle_keeps_the_latest_and_lets_it_go_when_due() {
        let mut throttle = Throttle::new(10);
        let t0 = Instant::now();
        assert!(throttle.offer(cursor(1.0), t0).is_some());
        assert!(throttle.offer(cursor(2.0), t0).is_none());
        assert!(throttle.offer(cursor(3.0), t0).is_none());
        assert_eq!(throttle.deadline(), Some(t0 + Duration::from_millis(100)));
        assert!(throttle.due(t0 + Duration::from_millis(50)).is_none());
        let Some(Body::CursorMove(c)) = throttle.due(t0 + Duration::from_millis(100)) else {
            panic!("the kept cursor is due");
        };
        assert_eq!(c.x, 3.0, "the latest one");
        assert_eq!(throttle.deadline(), None);
    }

    #[test]
    fn each_kind_has_its_own_limit() {
        let mut throttles = Throttles::new(30, 10);
        let t0 = Instant::now();
        let selection = |n: &str| {
            Body::SelectionChange(gitmind_schema::message::SelectionChange {
                nodes: vec![n.to_owned()],
                edges: Vec::new(),
            })
        };
        assert!(throttles.offer(selection("a"), t0).is_some());
        assert!(throttles.offer(cursor(1.0), t0).is_some(), "another kind");
        assert!(throttles.offer(selection("b"), t0).is_none());
        assert!(throttles.offer(selection("c"), t0).is_none());
        assert_eq!(throttles.deadline(), Some(t0 + Duration::from_millis(100)));
        let due: Vec<Body> = throttles.due(t0 + Duration::from_millis(100)).collect();
        assert_eq!(due, [selection("c")], "the latest selection, once");
    }

    #[test]
    fn a_cursor_that_goes_now_drops_the_older_one_kept() {
        let mut throttle = Throttle::new(10);
        let t0 = Instant::now();
        assert!(throttle.offer(cursor(1.0), t0).is_some());
        assert!(throttle.offer(cursor(2.0), t0).is_none(), "kept");
        // Due, but the timer has not fired yet when a newer one comes.
        let later = t0 + Duration::from_millis(150);
        assert!(throttle.offer(cursor(3.0), later).is_some());
        assert!(
            throttle.due(later + Duration::from_secs(1)).is_none(),
            "the older cursor never follows the newer one"
        );
    }
}
