//! The OT client for text: at most one mutation touching a node's text is
//! in flight per node, the later ones wait in order; remote operations and
//! refused changes transform the waiting ones (see "Text" in the
//! [module documentation](super)).

use gitmind_schema::message::{BatchOp, NodeUpdate};
use gitmind_schema::ot::{Component, TextOp};
use gitmind_schema::{Body, Envelope};

use super::store::{ops_of, Op, OpView};
use super::Replica;

impl Replica {
    /// The pending changes that may be sent now, in order, marked sent.
    ///
    /// A waiting text edit whose text was lost under it (its node deleted,
    /// or a snapshot replaced the state it was made on) is dropped instead:
    /// the server would refuse it, or apply it to a text it was not made for.
    pub(super) fn release(&mut self) -> Vec<Envelope> {
        let mut out = Vec::new();
        let mut k = 0;
        while k < self.pending.len() {
            if self.pending[k].sent {
                k += 1;
                continue;
            }
            let edited = text_edited_nodes(&self.pending[k].body);
            let blocked = self.pending.iter().take(k).any(|earlier| {
                earlier.sent && text_nodes(&earlier.body).iter().any(|n| edited.contains(n))
            });
            if blocked {
                break;
            }
            if !edited.is_empty()
                && (self.pending[k].broken || !self.text_fits(&self.pending[k].body))
            {
                if let Some(p) = self.pending.remove(k) {
                    self.undo_under(&p.body, k);
                    self.dropped.push(p.id);
                }
                continue;
            }
            self.pending[k].sent = true;
            self.pending[k].base = self.seq;
            out.push(self.envelope(&self.pending[k]));
            k += 1;
        }
        if !self.dropped.is_empty() {
            self.view.take();
        }
        out
    }

    /// Whether the first text edit of each node in `body` is made on the
    /// server's text of that node (a waiting edit is sent only when every
    /// earlier change to that text is settled, so it must be).
    fn text_fits(&self, body: &Body) -> bool {
        // Nodes whose text this body already edited or replaced: later
        // edits of them build on that, not on the server's text.
        let mut seen: Vec<&str> = Vec::new();
        for op in ops_of(body) {
            match op.op() {
                Op::NodeUpdate(u) => {
                    let edit = u.text.as_ref().and_then(|t| t.content.as_ref());
                    let replaces = u.set.as_ref().is_some_and(|s| s.content.is_some());
                    if let (Some(t), false) = (edit, seen.contains(&u.id.as_str())) {
                        if let Some(node) = self.server.nodes.get(&u.id) {
                            let len = node.content.as_deref().unwrap_or("").chars().count() as u64;
                            if t.base_len() != len {
                                return false;
                            }
                        }
                    }
                    if edit.is_some() || replaces {
                        seen.push(&u.id);
                    }
                }
                Op::NodeCreate(c) => seen.push(&c.node.id),
                Op::NodeDelete(d) => seen.push(&d.id),
                _ => {}
            }
        }
        true
    }

    /// The node's text was lost under the pending changes from index
    /// `from` on (deleted, or replaced by a refused change): their edits of
    /// it can no longer be rebased.
    pub(super) fn orphan_text(&mut self, node: &str, from: usize) {
        for p in self.pending.iter_mut().skip(from) {
            if text_edited_nodes(&p.body).iter().any(|n| n == node) {
                p.broken = true;
            }
        }
    }

    /// Transforms the pending text operations on `node`, from index `from`
    /// on, over an operation `r` on the text they were made on (a remote
    /// operation the server applied before them, or the undoing of a
    /// refused change before them).
    pub(super) fn rebase_pending(&mut self, node: &str, mut r: TextOp, from: usize) {
        'pending: for p in self.pending.iter_mut().skip(from) {
            if p.broken {
                continue;
            }
            // Walk this mutation's ops in order: an op that replaces the
            // text hides `r` from everything after it.
            let effects: Vec<bool> = ops_of(&p.body)
                .into_iter()
                .filter_map(|op| match text_effect(op, node) {
                    TextEffect::Edit(_) => Some(true),
                    TextEffect::Replace => Some(false),
                    TextEffect::None => None,
                })
                .collect();
            let mut edits = text_ops_mut(&mut p.body)
                .into_iter()
                .filter(|(id, _)| *id == node);
            for is_edit in effects {
                if !is_edit {
                    break 'pending;
                }
                let Some((_, op)) = edits.next() else {
                    break 'pending;
                };
                match TextOp::transform_pair(&r, op) {
                    Ok((r2, op2)) => {
                        *op = op2;
                        r = r2;
                    }
                    Err(_) => {
                        p.broken = true;
                        break 'pending;
                    }
                }
            }
        }
    }

    /// A pending change left without being applied (refused, or dropped
    /// unsent): the changes after it, from `index` on, were made on top of
    /// its text edits, so they are rebased over their undoing, or dropped
    /// where the text cannot be restored.
    pub(super) fn undo_under(&mut self, body: &Body, index: usize) {
        for node in text_nodes(body) {
            match self.undo_text(body, &node) {
                Some(inverse) => self.rebase_pending(&node, inverse, index),
                // The text the waiting edits were made on never existed on
                // the server (a replacement, a create or a delete that was
                // refused): they cannot be rebased, so they are dropped.
                None => self.orphan_text(&node, index),
            }
        }
    }

    /// The operation that undoes a rolled-back change's edits of `node`'s
    /// text, relative to the text with them applied; `None` when the change
    /// replaced the text or its edits do not fit the server's text.
    fn undo_text(&self, body: &Body, node: &str) -> Option<TextOp> {
        let before = self
            .server
            .nodes
            .get(node)?
            .content
            .clone()
            .unwrap_or_default();
        let mut forward: Option<TextOp> = None;
        for op in ops_of(body) {
            match text_effect(op, node) {
                TextEffect::Edit(t) => {
                    forward = Some(match forward {
                        None => t.clone(),
                        Some(f) => f.compose(t).ok()?,
                    });
                }
                TextEffect::Replace => return None,
                TextEffect::None => {}
            }
        }
        let forward = forward?;
        forward.apply(&before).ok()?;
        invert(&forward, &before)
    }
}

/// The text operations of a body, mutable, with the node each edits.
fn text_ops_mut(body: &mut Body) -> Vec<(&str, &mut TextOp)> {
    fn of(u: &mut NodeUpdate) -> Option<(&str, &mut TextOp)> {
        let op = u.text.as_mut()?.content.as_mut()?;
        Some((u.id.as_str(), op))
    }
    match body {
        Body::NodeUpdate(u) => of(u).into_iter().collect(),
        Body::BatchUpdate(b) => b
            .ops
            .iter_mut()
            .filter_map(|op| match op {
                BatchOp::NodeUpdate(u) => of(u),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// How an op affects a node's text, for rebasing.
enum TextEffect<'a> {
    /// It edits the text with this operation.
    Edit(&'a TextOp),
    /// It replaces (sets, creates with content, deletes) the whole text:
    /// nothing after it depends on the text before.
    Replace,
    /// It does not touch the text.
    None,
}

fn text_effect<'a>(op: OpView<'a>, node: &str) -> TextEffect<'a> {
    match op.op() {
        Op::NodeCreate(c) if c.node.id == node && c.node.content.is_some() => TextEffect::Replace,
        Op::NodeDelete(d) if d.id == node => TextEffect::Replace,
        Op::NodeUpdate(u) if u.id == node => {
            if u.set.as_ref().is_some_and(|s| s.content.is_some()) {
                return TextEffect::Replace;
            }
            match u.text.as_ref().and_then(|t| t.content.as_ref()) {
                Some(t) => TextEffect::Edit(t),
                None => TextEffect::None,
            }
        }
        _ => TextEffect::None,
    }
}

/// The nodes whose text a mutation touches (edits, replaces, creates, deletes).
pub(super) fn text_nodes(body: &Body) -> Vec<String> {
    let mut out = Vec::new();
    for op in ops_of(body) {
        match op.op() {
            Op::NodeCreate(c) => out.push(c.node.id.clone()),
            Op::NodeDelete(d) => out.push(d.id.clone()),
            Op::NodeUpdate(u)
                if u.text.is_some() || u.set.as_ref().is_some_and(|s| s.content.is_some()) =>
            {
                out.push(u.id.clone());
            }
            _ => {}
        }
    }
    out
}

/// The nodes a mutation edits with text operations.
pub(super) fn text_edited_nodes(body: &Body) -> Vec<String> {
    let mut out = Vec::new();
    for op in ops_of(body) {
        if let Op::NodeUpdate(u) = op.op() {
            if u.text.as_ref().is_some_and(|t| t.content.is_some()) {
                out.push(u.id.clone());
            }
        }
    }
    out
}

/// The operation that undoes `op` on the text it was applied to (`before`).
fn invert(op: &TextOp, before: &str) -> Option<TextOp> {
    let chars: Vec<char> = before.chars().collect();
    let mut inv = TextOp::new();
    let mut pos = 0usize;
    for c in op.components() {
        match c {
            Component::Retain(n) => {
                let n = usize::try_from(*n).ok()?;
                inv.retain(n as u64);
                pos += n;
            }
            Component::Insert(s) => {
                inv.delete(s.chars().count() as u64);
            }
            Component::Delete(n) => {
                let n = usize::try_from(*n).ok()?;
                let deleted: String = chars.get(pos..pos + n)?.iter().collect();
                inv.insert(&deleted);
                pos += n;
            }
        }
    }
    (pos == chars.len()).then_some(inv)
}

/// The operation that turns `old` into `new` by replacing it whole.
pub(super) fn replacement(old: &str, new: &str) -> TextOp {
    let mut op = TextOp::new();
    op.delete(old.chars().count() as u64).insert(new);
    op
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use gitmind_schema::message::NodeDelete;

    use super::super::fixtures::*;
    use super::*;

    #[test]
    fn remote_text_op_rebases_the_pending_one() {
        let mut r = synced();
        r.local_mutation("m1", text("c:a", ins(5, "!", 0))).unwrap();
        r.apply_event(&event("x", "other", 2, text("c:a", ins(0, ">", 5))))
            .unwrap();
        assert_eq!(content(&r), ">hello!");
        // The confirmation carries the op as the server applied it.
        r.settle(&confirmed("m1", 3, Some(ins(6, "!", 0)))).unwrap();
        assert_eq!(content(&r), ">hello!");
        assert_eq!(
            r.server_nodes().next().unwrap().content.as_deref(),
            Some(">hello!")
        );
    }

    #[test]
    fn text_edit_waits_behind_an_in_flight_edit_of_the_same_node() {
        let mut r = synced();
        assert!(r
            .local_mutation("m1", text("c:a", ins(5, "1", 0)))
            .unwrap()
            .is_some());
        assert!(r
            .local_mutation("m2", text("c:a", ins(6, "2", 0)))
            .unwrap()
            .is_none());
        // A change after a waiting one waits too: order is kept.
        assert!(r.local_mutation("m3", label("c:a", "x")).unwrap().is_none());
        assert_eq!(content(&r), "hello12");
        r.apply_event(&event("x", "other", 2, text("c:a", ins(0, "<", 5))))
            .unwrap();
        assert_eq!(content(&r), "<hello12");
        let sent = r.settle(&confirmed("m1", 3, None)).unwrap();
        assert_eq!(sent.len(), 2);
        let Body::NodeUpdate(u) = &sent[0].body else {
            panic!()
        };
        assert_eq!(u.base_seq, Some(3));
        assert_eq!(
            u.text.as_ref().unwrap().content.as_ref(),
            Some(&ins(7, "2", 0))
        );
    }

    #[test]
    fn rolled_back_text_edit_is_undone_under_the_waiting_one() {
        let mut r = synced();
        r.local_mutation("m1", text("c:a", ins(0, "abc", 5)))
            .unwrap();
        r.local_mutation("m2", text("c:a", ins(8, "!", 0))).unwrap();
        assert_eq!(content(&r), "abchello!");
        let sent = r.settle(&rollback("m1")).unwrap();
        assert_eq!(content(&r), "hello!");
        let Body::NodeUpdate(u) = &sent[0].body else {
            panic!()
        };
        assert_eq!(
            u.text.as_ref().unwrap().content.as_ref(),
            Some(&ins(5, "!", 0))
        );
    }

    #[test]
    fn waiting_edit_of_a_node_deleted_under_it_is_dropped() {
        let mut r = synced();
        r.local_mutation("m1", text("c:a", ins(0, "a", 5))).unwrap();
        r.local_mutation("m2", text("c:a", ins(0, "b", 6))).unwrap();
        r.settle(&rollback("m1")).unwrap();
        let del = Body::NodeDelete(NodeDelete {
            id: "c:a".into(),
            ..NodeDelete::default()
        });
        let sent = r.apply_event(&event("x", "other", 2, del)).unwrap();
        assert!(sent.is_empty() || r.pending_count() == 1);
        // m2 was sent after m1's rollback; a new waiting edit is dropped.
        assert!(r.node("c:a").is_none());
    }

    #[test]
    fn resend_after_reconnect_carries_the_current_base_seq() {
        let mut r = synced();
        r.local_mutation("m1", text("c:a", ins(5, "!", 0))).unwrap();
        r.apply_event(&event("x", "other", 2, text("c:a", ins(0, ">", 5))))
            .unwrap();
        let resend = r.pending();
        let Body::NodeUpdate(u) = &resend[0].body else {
            panic!()
        };
        assert_eq!(u.base_seq, Some(2));
        assert_eq!(
            u.text.as_ref().unwrap().content.as_ref(),
            Some(&ins(6, "!", 0))
        );
    }

    #[test]
    fn invert_undoes_an_op() {
        let mut op = TextOp::new();
        op.retain(1).delete(2).insert("XY").retain(2);
        let after = op.apply("abcde").unwrap();
        let inv = invert(&op, "abcde").unwrap();
        assert_eq!(inv.apply(&after).unwrap(), "abcde");
        assert!(invert(&op, "ab").is_none());
    }
}
