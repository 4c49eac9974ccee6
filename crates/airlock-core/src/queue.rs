//! The waiting line. When no desktop is free, a terminal that asks to wait gets a ticket
//! in one FIFO line per pool (no peer does this: they answer "try later"). One ticket per
//! terminal; a ticket lives while its terminal keeps asking about it and is dropped when
//! it stops. A desktop that becomes clean while tickets wait is *held* for the first
//! ticket that has none, for a short time; nobody else can lease a held desktop. The
//! holder leases it by asking again (the broker then leases exactly that desktop); a hold
//! that runs out means the terminal is gone: its ticket leaves the line and the desktop
//! is offered to the next one.
//!
//! Pure: time is passed in, ids are made by the caller.
use crate::policy::{choose_desktop, Candidate};
use crate::{DesktopId, TerminalName, TicketId, UnixMillis, UserName};

/// One terminal waiting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    pub id: TicketId,
    pub terminal: TerminalName,
    pub user: UserName,
    /// When it joined the line.
    pub joined_at: UnixMillis,
    /// When its terminal last asked about it.
    pub seen_at: UnixMillis,
    /// A clean desktop held for it, and until when.
    pub hold: Option<(DesktopId, UnixMillis)>,
}

/// Where a ticket stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Standing {
    pub id: TicketId,
    /// 1 for the head of the line.
    pub position: usize,
    /// How many tickets wait in all.
    pub waiting: usize,
    /// How long it has waited.
    pub waited_ms: i64,
    /// The desktop held for it, if any: lease it now.
    pub held: Option<DesktopId>,
}

/// Why a ticket left the line without getting a desktop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeftBecause {
    /// Its terminal cancelled it.
    Cancelled,
    /// Its terminal stopped asking about it.
    Expired,
    /// A desktop was held for it and not taken in time.
    HoldExpired,
}

impl LeftBecause {
    /// The reason as the audit trail spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            LeftBecause::Cancelled => "cancelled",
            LeftBecause::Expired => "expired",
            LeftBecause::HoldExpired => "hold_expired",
        }
    }
}

/// What [`WaitQueue::reconcile`] changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reconciled {
    /// Holds given back (ticket, desktop): the desktop is no longer clean.
    pub dropped: Vec<(TicketId, DesktopId)>,
    /// New holds (desktop, ticket).
    pub held: Vec<(DesktopId, TicketId)>,
}

impl Reconciled {
    /// Whether anything changed.
    pub fn changed(&self) -> bool {
        !self.dropped.is_empty() || !self.held.is_empty()
    }
}

/// The line of one pool, head first.
#[derive(Debug, Clone, Default)]
pub struct WaitQueue {
    tickets: Vec<Ticket>,
}

impl WaitQueue {
    pub fn new() -> WaitQueue {
        WaitQueue::default()
    }

    pub fn len(&self) -> usize {
        self.tickets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tickets.is_empty()
    }

    /// The tickets, head first.
    pub fn tickets(&self) -> &[Ticket] {
        &self.tickets
    }

    fn index(&self, id: &TicketId) -> Option<usize> {
        self.tickets.iter().position(|t| &t.id == id)
    }

    fn standing(&self, i: usize, now: UnixMillis) -> Standing {
        let t = &self.tickets[i];
        Standing {
            id: t.id.clone(),
            position: i + 1,
            waiting: self.tickets.len(),
            waited_ms: now.saturating_sub(t.joined_at).max(0),
            held: t.hold.as_ref().map(|(d, _)| d.clone()),
        }
    }

    /// The ticket of `terminal`, if it has one.
    pub fn of_terminal(&self, terminal: &TerminalName) -> Option<&Ticket> {
        self.tickets.iter().find(|t| &t.terminal == terminal)
    }

    /// Joins the line with a new ticket `id` at the end, or, when `terminal` already
    /// waits, returns its ticket (refreshed, user updated, place kept). The `bool` says
    /// whether the ticket is new.
    pub fn join(
        &mut self,
        id: TicketId,
        terminal: &TerminalName,
        user: &UserName,
        now: UnixMillis,
    ) -> (Standing, bool) {
        if let Some(i) = self.tickets.iter().position(|t| &t.terminal == terminal) {
            let t = &mut self.tickets[i];
            t.seen_at = now;
            t.user = user.clone();
            return (self.standing(i, now), false);
        }
        self.tickets.push(Ticket {
            id,
            terminal: terminal.clone(),
            user: user.clone(),
            joined_at: now,
            seen_at: now,
            hold: None,
        });
        (self.standing(self.tickets.len() - 1, now), true)
    }

    /// The terminal asks about its ticket: refreshed, and where it stands; `None` when
    /// there is no such ticket of this terminal (it left, or it is another's).
    pub fn touch(
        &mut self,
        id: &TicketId,
        terminal: &TerminalName,
        now: UnixMillis,
    ) -> Option<Standing> {
        let i = self
            .index(id)
            .filter(|&i| &self.tickets[i].terminal == terminal)?;
        self.tickets[i].seen_at = now;
        Some(self.standing(i, now))
    }

    /// Where a ticket stands, without refreshing it.
    pub fn standing_of(&self, id: &TicketId, now: UnixMillis) -> Option<Standing> {
        self.index(id).map(|i| self.standing(i, now))
    }

    /// The terminal cancels its ticket; returns it (with any hold, which the caller
    /// offers to the next ticket).
    pub fn leave(&mut self, id: &TicketId, terminal: &TerminalName) -> Option<Ticket> {
        let i = self
            .index(id)
            .filter(|&i| &self.tickets[i].terminal == terminal)?;
        Some(self.tickets.remove(i))
    }

    /// The held desktop of ticket `id`, removing the ticket from the line: its terminal
    /// leases that desktop now. `None` when it holds nothing.
    pub fn take_hold(&mut self, id: &TicketId) -> Option<DesktopId> {
        let i = self.index(id)?;
        let (desktop, _) = self.tickets[i].hold.clone()?;
        self.tickets.remove(i);
        Some(desktop)
    }

    /// Gives back the hold of ticket `id` (its lease failed): the ticket keeps its place.
    pub fn drop_hold(&mut self, id: &TicketId) -> Option<DesktopId> {
        let i = self.index(id)?;
        self.tickets[i].hold.take().map(|(d, _)| d)
    }

    /// Is `desktop` held for a ticket? (Then nobody else may lease it.)
    pub fn is_held(&self, desktop: &DesktopId) -> bool {
        self.tickets
            .iter()
            .any(|t| t.hold.as_ref().is_some_and(|(d, _)| d == desktop))
    }

    /// How many desktops are held.
    pub fn held_count(&self) -> usize {
        self.tickets.iter().filter(|t| t.hold.is_some()).count()
    }

    /// `desktop` has become clean: hold it for the first ticket that holds nothing, until
    /// `now + hold_ms`. Returns that ticket, or `None` (nobody waits for one, or the
    /// desktop is already held).
    pub fn offer(
        &mut self,
        desktop: &DesktopId,
        now: UnixMillis,
        hold_ms: i64,
    ) -> Option<TicketId> {
        if self.is_held(desktop) {
            return None;
        }
        let t = self.tickets.iter_mut().find(|t| t.hold.is_none())?;
        t.hold = Some((desktop.clone(), now.saturating_add(hold_ms)));
        Some(t.id.clone())
    }

    /// Brings the holds in line with the desktops that are `clean` now: a hold on a
    /// desktop that is no longer clean is given back (the ticket keeps its place), and
    /// every clean desktop nobody holds is held for the first ticket that holds none,
    /// the one clean the longest first ([`choose_desktop`]), until `now + hold_ms`.
    /// Afterwards no clean desktop is free while a ticket waits without one.
    pub fn reconcile(&mut self, clean: &[Candidate], now: UnixMillis, hold_ms: i64) -> Reconciled {
        let mut done = Reconciled::default();
        for t in &mut self.tickets {
            if let Some((d, _)) = &t.hold {
                if !clean.iter().any(|c| &c.id == d) {
                    done.dropped.push((t.id.clone(), d.clone()));
                    t.hold = None;
                }
            }
        }
        let mut free: Vec<Candidate> = clean
            .iter()
            .filter(|c| !self.is_held(&c.id))
            .cloned()
            .collect();
        while let Some(c) = choose_desktop(&free).cloned() {
            free.retain(|x| x.id != c.id);
            match self.offer(&c.id, now, hold_ms) {
                Some(ticket) => done.held.push((c.id, ticket)),
                None => break,
            }
        }
        done
    }

    /// Removes the tickets whose terminal stopped asking (not seen for `timeout_ms`) and
    /// those whose hold ran out. Returns them with why; the caller offers their held
    /// desktops to the next tickets.
    pub fn expire(&mut self, now: UnixMillis, timeout_ms: i64) -> Vec<(Ticket, LeftBecause)> {
        let mut gone = Vec::new();
        self.tickets.retain(|t| {
            let why = match &t.hold {
                Some((_, until)) if now > *until => Some(LeftBecause::HoldExpired),
                _ if now.saturating_sub(t.seen_at) > timeout_ms => Some(LeftBecause::Expired),
                _ => None,
            };
            match why {
                Some(why) => {
                    gone.push((t.clone(), why));
                    false
                }
                None => true,
            }
        });
        gone
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    fn tid(n: u8) -> TicketId {
        TicketId::from_random([n; 16])
    }
    fn term(n: u8) -> TerminalName {
        TerminalName::parse(&format!("t{n}")).unwrap()
    }
    fn desk(n: u8) -> DesktopId {
        DesktopId::numbered("desk", usize::from(n)).unwrap()
    }
    fn user() -> UserName {
        UserName::parse("dr-x").unwrap()
    }

    #[test]
    fn first_come_first_served_with_positions() {
        let mut q = WaitQueue::new();
        let (a, new_a) = q.join(tid(1), &term(1), &user(), 1000);
        let (b, _) = q.join(tid(2), &term(2), &user(), 2000);
        assert!(new_a);
        assert_eq!((a.position, b.position, b.waiting), (1, 2, 2));
        // A desktop freed goes to the head, the next one to the second.
        assert_eq!(q.offer(&desk(1), 5000, 10_000), Some(tid(1)));
        assert_eq!(q.offer(&desk(1), 5000, 10_000), None, "already held");
        assert_eq!(q.offer(&desk(2), 5000, 10_000), Some(tid(2)));
        assert!(q.is_held(&desk(1)) && q.is_held(&desk(2)));
        let s = q.touch(&tid(1), &term(1), 6000).unwrap();
        assert_eq!((s.held, s.waited_ms), (Some(desk(1)), 5000));
        assert_eq!(q.take_hold(&tid(1)), Some(desk(1)));
        assert_eq!(q.touch(&tid(2), &term(2), 6000).unwrap().position, 1);
        assert!(!q.is_held(&desk(1)));
    }

    #[test]
    fn one_ticket_per_terminal_and_only_its_terminal_may_use_it() {
        let mut q = WaitQueue::new();
        q.join(tid(1), &term(1), &user(), 0);
        q.join(tid(2), &term(2), &user(), 0);
        let (again, new) = q.join(tid(3), &term(1), &UserName::parse("dr-y").unwrap(), 50);
        assert!(!new);
        assert_eq!((again.id, again.position), (tid(1), 1));
        assert_eq!(q.len(), 2);
        assert_eq!(q.tickets()[0].user.as_str(), "dr-y");
        assert!(q.touch(&tid(1), &term(2), 60).is_none());
        assert!(q.leave(&tid(1), &term(2)).is_none());
        assert!(q.leave(&tid(1), &term(1)).is_some());
        assert_eq!(q.standing_of(&tid(2), 60).unwrap().position, 1);
    }

    #[test]
    fn silent_terminals_and_unclaimed_holds_leave_the_line() {
        let mut q = WaitQueue::new();
        q.join(tid(1), &term(1), &user(), 0);
        q.join(tid(2), &term(2), &user(), 0);
        q.join(tid(3), &term(3), &user(), 0);
        q.offer(&desk(1), 100, 1000);
        q.touch(&tid(1), &term(1), 900);
        q.touch(&tid(2), &term(2), 900);
        // At 1200: ticket 1's hold ran out, ticket 3 was not seen for 1200 ms.
        let gone = q.expire(1200, 1000);
        let why: Vec<_> = gone.iter().map(|(t, w)| (t.id.clone(), *w)).collect();
        assert_eq!(
            why,
            [
                (tid(1), LeftBecause::HoldExpired),
                (tid(3), LeftBecause::Expired)
            ]
        );
        assert_eq!(gone[0].0.hold.as_ref().map(|h| h.0.clone()), Some(desk(1)));
        assert_eq!(q.offer(&desk(1), 1200, 1000), Some(tid(2)));
        assert_eq!(q.drop_hold(&tid(2)), Some(desk(1)));
        assert!(!q.is_held(&desk(1)));
        assert_eq!(LeftBecause::HoldExpired.as_str(), "hold_expired");
    }

    fn clean(d: u8, since: i64) -> Candidate {
        Candidate {
            id: desk(d),
            clean_since: since,
        }
    }

    #[test]
    fn reconcile_holds_free_desktops_for_the_line_and_gives_back_unclean_ones() {
        let mut q = WaitQueue::new();
        assert_eq!(q.reconcile(&[clean(1, 0)], 0, 1000), Reconciled::default());
        q.join(tid(1), &term(1), &user(), 0);
        q.join(tid(2), &term(2), &user(), 0);
        q.join(tid(3), &term(3), &user(), 0);
        // Three clean desktops, two without holds: the longest clean goes to the head.
        q.offer(&desk(3), 0, 1000);
        let r = q.reconcile(&[clean(1, 50), clean(2, 40), clean(3, 10)], 100, 1000);
        assert_eq!(r.held, [(desk(2), tid(2)), (desk(1), tid(3))]);
        assert!(r.dropped.is_empty() && r.changed());
        // desk-03 died: its hold is given back, and it is not re-offered.
        let r = q.reconcile(&[clean(1, 50), clean(2, 40)], 200, 1000);
        assert_eq!((r.dropped, r.held), (vec![(tid(1), desk(3))], vec![]));
        assert_eq!(q.standing_of(&tid(1), 200).unwrap().held, None);
        assert_eq!(q.standing_of(&tid(1), 200).unwrap().position, 1);
        // More clean desktops than tickets: the rest stay free.
        let r = q.reconcile(
            &[clean(1, 50), clean(2, 40), clean(4, 1), clean(5, 2)],
            300,
            1000,
        );
        assert_eq!(r.held, [(desk(4), tid(1))]);
        assert!(!q.is_held(&desk(5)));
        assert!(!q
            .reconcile(&[clean(1, 50), clean(2, 40), clean(4, 1)], 300, 1000)
            .changed());
    }

    #[derive(Debug, Clone)]
    enum Op {
        Join(u8),
        Touch(u8),
        Leave(u8),
        Offer(u8),
        Take(u8),
        Expire,
        Tick(u16),
        /// The desktops of this bit set are clean.
        Reconcile(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u8..6).prop_map(Op::Join),
            (0u8..6).prop_map(Op::Touch),
            (0u8..6).prop_map(Op::Leave),
            (0u8..4).prop_map(Op::Offer),
            (0u8..6).prop_map(Op::Take),
            Just(Op::Expire),
            (0u16..3000).prop_map(Op::Tick),
            (0u8..16).prop_map(Op::Reconcile),
        ]
    }

    proptest! {
        /// Whatever happens: one ticket per terminal, each desktop held at most once,
        /// positions 1..n in joining order, an offer always goes to the earliest ticket
        /// that holds nothing, and after a reconcile holds are on clean desktops only
        /// and no clean desktop is free while a ticket waits without one.
        #[test]
        fn random_histories_keep_the_line_fair(ops in proptest::collection::vec(op(), 1..80)) {
            let mut q = WaitQueue::new();
            let mut now: UnixMillis = 0;
            let mut next = 0u8;
            for op in ops {
                match op {
                    Op::Join(t) => {
                        next = next.wrapping_add(1);
                        q.join(tid(next), &term(t), &user(), now);
                    }
                    Op::Touch(t) => {
                        if let Some(id) = q.of_terminal(&term(t)).map(|x| x.id.clone()) {
                            let s = q.touch(&id, &term(t), now).unwrap();
                            prop_assert!(s.position >= 1 && s.position <= s.waiting);
                        }
                    }
                    Op::Leave(t) => {
                        if let Some(id) = q.of_terminal(&term(t)).map(|x| x.id.clone()) {
                            q.leave(&id, &term(t));
                        }
                    }
                    Op::Offer(d) => {
                        let expected = q.tickets().iter().find(|t| t.hold.is_none()).map(|t| t.id.clone());
                        let held_before = q.is_held(&desk(d));
                        let got = q.offer(&desk(d), now, 1000);
                        if held_before {
                            prop_assert_eq!(got, None);
                        } else {
                            prop_assert_eq!(got, expected);
                        }
                    }
                    Op::Take(t) => {
                        if let Some(id) = q.of_terminal(&term(t)).map(|x| x.id.clone()) {
                            let had = q.standing_of(&id, now).unwrap().held;
                            prop_assert_eq!(q.take_hold(&id), had.clone());
                            prop_assert_eq!(q.standing_of(&id, now).is_none(), had.is_some());
                        }
                    }
                    Op::Expire => {
                        for (t, why) in q.expire(now, 2000) {
                            match why {
                                LeftBecause::HoldExpired => prop_assert!(t.hold.is_some()),
                                _ => prop_assert!(now - t.seen_at > 2000),
                            }
                        }
                    }
                    Op::Tick(ms) => now += i64::from(ms),
                    Op::Reconcile(bits) => {
                        let clean: Vec<Candidate> = (0u8..4)
                            .filter(|d| bits & (1 << d) != 0)
                            .map(|d| Candidate { id: desk(d), clean_since: i64::from(d) })
                            .collect();
                        q.reconcile(&clean, now, 1000);
                        // Every hold is on a clean desktop, and no clean desktop is free
                        // while a ticket waits without one.
                        for t in q.tickets() {
                            if let Some((d, _)) = &t.hold {
                                prop_assert!(clean.iter().any(|c| &c.id == d));
                            }
                        }
                        let unheld_ticket = q.tickets().iter().any(|t| t.hold.is_none());
                        let free_desktop = clean.iter().any(|c| !q.is_held(&c.id));
                        prop_assert!(!(unheld_ticket && free_desktop));
                    }
                }
                let terminals: HashSet<_> = q.tickets().iter().map(|t| t.terminal.clone()).collect();
                prop_assert_eq!(terminals.len(), q.len());
                let held: Vec<_> = q.tickets().iter().filter_map(|t| t.hold.as_ref().map(|h| h.0.clone())).collect();
                let distinct: HashSet<_> = held.iter().cloned().collect();
                prop_assert_eq!(distinct.len(), held.len());
                prop_assert_eq!(q.held_count(), held.len());
                let joined: Vec<_> = q.tickets().iter().map(|t| t.joined_at).collect();
                prop_assert!(joined.windows(2).all(|w| w[0] <= w[1]));
            }
        }
    }
}
