//! The waiting line: a terminal that asks to wait when no desktop is free gets a ticket
//! in the pool's one FIFO line ([`airlock_core::queue::WaitQueue`], one ticket per
//! terminal), and every desktop that becomes clean is held for the first ticket that
//! holds none before anyone else can lease it.
//!
//! How it stays fair and consistent:
//! - The line lives behind one mutex. Every decision that involves it (a lease request,
//!   a poll, a cancellation, the expiry sweep, a desktop becoming clean) runs under that
//!   mutex, and a lease is granted inside the same critical section by one store
//!   transaction ([`airlock_store::Store::acquire_with`]) that leaves out every held
//!   desktop, or leases exactly the holder's desktop. So a held desktop is leased only
//!   to its ticket, and the database still enforces one lease per desktop. Lock order:
//!   the line, then the store; never the other way round.
//! - Before each decision the line is *reconciled* with the store: a hold on a desktop
//!   that is no longer clean (its QEMU died, the golden image changed) is given back, and
//!   every clean desktop nobody holds is offered to the line, longest clean first. Only
//!   clean desktops are ever offered. While any ticket waits without a hold, no clean
//!   desktop is left unheld, so a newcomer (waiting or not) never passes the line; with
//!   an empty line nothing of this runs and a plain request is what it always was.
//! - A ticket is seen while a poll of it is in progress: during a long poll (at most
//!   [`airlock_core::wire::MAX_QUEUE_WAIT_S`]) it cannot expire, and it leaves the line
//!   `ticket_timeout` after the end of its last poll without a new one (`expired`; a
//!   poll ends when it answers, or when the terminal goes away during it and the HTTP
//!   server drops it), or when the desktop held for it is not taken within `hold`
//!   (`hold_expired`); its hold then goes to the next ticket. Defaults
//!   ([`crate::QueueConfig`]): polls every 2 s, a ticket timeout of three missed polls
//!   (6 s), holds of 15 s (a holder that polls takes its desktop at once, so a hold
//!   runs out only for a terminal that is gone, and usually its ticket timeout comes
//!   first). The sweep loop expires tickets every `sweep_interval`.
//! - Long polls sleep on a watch channel bumped at every change of the line; each wakes,
//!   re-reads its ticket, and answers when its place or the size of the line differs
//!   from what its terminal was last told, or when a desktop is held for it (then the
//!   poll itself leases that desktop and answers the grant).
//! - Audit: `queue_joined`, `queue_held` (a desktop held for a ticket),
//!   `queue_hold_dropped` (the held desktop stopped being clean), `queue_left` (reason
//!   `cancelled`, `expired`, `hold_expired`, or `granted`, which is written in the lease's
//!   own transaction after its `lease_granted`, whose details carry `ticket` and
//!   `waited_ms`). The line is not persisted: a broker restart empties it, and the
//!   terminals' next polls get `ticket_not_found` (they ask again and join at the end).
use super::{now_ms, random_bytes, Pool};
use crate::error::PoolError;
use crate::metrics::OutcomeLabel;
use airlock_core::policy::Candidate;
use airlock_core::queue::{LeftBecause, Standing, Ticket, WaitQueue};
use airlock_core::wire::QueueStanding;
use airlock_core::{
    DesktopId, DesktopState, LeaseId, TerminalName, TicketId, UnixMillis, UserName,
};
use airlock_store::{AcquireRequest, Acquired, AuditEntry, Pick, StoreError, Waited};
use serde_json::json;
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

/// The line and what each ticket's terminal was last told.
#[derive(Default)]
pub(super) struct Line {
    queue: WaitQueue,
    /// The (position, waiting) each ticket's terminal was last answered: a long poll
    /// answers as soon as it differs.
    told: HashMap<TicketId, (usize, usize)>,
    /// How many polls of each ticket are in progress: such a ticket is seen now.
    polling: HashMap<TicketId, usize>,
}

/// The pool's waiting line and the signal its long polls wait on.
pub(super) struct QueueState {
    line: Mutex<Line>,
    /// Bumped at every change of the line.
    changed: tokio::sync::watch::Sender<u64>,
}

impl QueueState {
    pub(super) fn new() -> QueueState {
        QueueState {
            line: Mutex::new(Line::default()),
            changed: tokio::sync::watch::channel(0).0,
        }
    }
}

/// What a lease request decided under the line's lock.
pub(super) enum Decision {
    /// A lease (new or re-attached) was written; its display is set up next.
    Lease(Acquired),
    /// The terminal waits in line.
    Queued(QueueStanding),
    /// No desktop is free and the terminal did not ask to wait.
    NoneFree,
}

/// What one look at a polled ticket found.
enum PollStep {
    /// The held desktop was leased to it.
    Lease(Acquired),
    /// Answer this standing.
    Answer(QueueStanding),
    /// Nothing new: wait for a change.
    Wait,
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Pool {
    fn line(&self) -> Result<MutexGuard<'_, Line>, PoolError> {
        self.inner
            .queue
            .line
            .lock()
            .map_err(|_| PoolError::Poisoned {
                what: "waiting line",
            })
    }

    fn notify_line_changed(&self) {
        self.inner
            .queue
            .changed
            .send_modify(|n| *n = n.wrapping_add(1));
    }

    fn to_wire(&self, s: &Standing) -> QueueStanding {
        QueueStanding {
            ticket_id: s.id.clone(),
            position: s.position,
            waiting: s.waiting,
            waited_ms: s.waited_ms,
            poll_interval_s: self.inner.cfg.queue.poll_interval.as_secs().max(1),
        }
    }

    /// A lease request, decided under the line's lock: the terminal's live lease of the
    /// same user (re-attach), else the desktop held for the terminal's ticket, else a
    /// clean desktop nobody holds, else (with `wait`) a place in line.
    pub(super) fn decide(
        &self,
        lease_id: &LeaseId,
        terminal: &TerminalName,
        user: &UserName,
        wait: bool,
    ) -> Result<Decision, PoolError> {
        let (now, mut line, mut changed) = self.reconciled_line()?;
        let mine: Option<(TicketId, DesktopId, i64)> =
            line.queue.of_terminal(terminal).and_then(|t| {
                let (d, _) = t.hold.as_ref()?;
                Some((t.id.clone(), d.clone(), now.saturating_sub(t.joined_at)))
            });
        let held = held_desktops(&line.queue);
        let result = self.store()?.acquire_with(&AcquireRequest {
            lease_id,
            terminal,
            user,
            now,
            pick: match &mine {
                Some((_, d, _)) => Pick::Exactly(d),
                None => Pick::AnyExcept(&held),
            },
            reattach_within_ms: Some(self.inner.timing.timeout_ms),
            waited: mine.as_ref().map(|(ticket, _, waited_ms)| Waited {
                ticket,
                waited_ms: *waited_ms,
            }),
            terminal_limit: Some(self.inner.cfg.leases_per_terminal),
        });
        let leased = match &mine {
            Some((ticket, desktop, waited_ms)) => {
                changed = true;
                self.settle_hold(&mut line, ticket, desktop, *waited_ms, result, now)?
            }
            None => match result {
                Ok(a) => Some(a),
                Err(StoreError::NoFreeDesktop) => None,
                Err(StoreError::LeaseLimit { limit, .. }) => {
                    return Err(PoolError::LeaseLimit { limit })
                }
                Err(e) => return Err(e.into()),
            },
        };
        let decision = match leased {
            Some(a) => Decision::Lease(a),
            None if wait => {
                let (standing, new) = self.join_line(&mut line, terminal, user, now)?;
                changed |= new;
                Decision::Queued(standing)
            }
            None => Decision::NoneFree,
        };
        drop(line);
        if changed {
            self.notify_line_changed();
        }
        Ok(decision)
    }

    /// The terminal takes its place at the end of the line, or keeps the one it has
    /// (`true` when it is new).
    fn join_line(
        &self,
        line: &mut Line,
        terminal: &TerminalName,
        user: &UserName,
        now: UnixMillis,
    ) -> Result<(QueueStanding, bool), PoolError> {
        let id = TicketId::from_random(random_bytes::<16>()?);
        let (standing, new) = line.queue.join(id, terminal, user, now);
        if new {
            self.record_audit(
                AuditEntry::new("queue_joined")
                    .terminal(terminal)
                    .user(user)
                    .details(json!({
                        "ticket": standing.id,
                        "position": standing.position,
                        "waiting": standing.waiting,
                    })),
            );
            tracing::info!(terminal = %terminal, user = %user, position = standing.position,
                waiting = standing.waiting, "no free desktop: terminal waits in line");
        }
        line.told
            .insert(standing.id.clone(), (standing.position, standing.waiting));
        Ok((self.to_wire(&standing), new))
    }

    /// `POST /v1/queue/{ticket}`: keeps the ticket alive and waits up to `wait` for a
    /// change; answers the ticket's standing, or the lease of the desktop held for it.
    pub async fn poll_ticket(
        &self,
        ticket: &TicketId,
        terminal: &TerminalName,
        wait: Duration,
    ) -> Result<super::LeaseOutcome, PoolError> {
        let t0 = std::time::Instant::now();
        let deadline = tokio::time::Instant::now() + wait;
        // Subscribed before the first look, so no change between a look and the sleep
        // is missed.
        let mut rx = self.inner.queue.changed.subscribe();
        {
            let mut line = self.line()?;
            line.queue
                .touch(ticket, terminal, now_ms())
                .ok_or(PoolError::TicketNotFound)?;
            *line.polling.entry(ticket.clone()).or_default() += 1;
        }
        let _polling = PollInProgress { pool: self, ticket };
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.poll_step(ticket, terminal, left)? {
                PollStep::Lease(a) => return self.finish_grant(a, t0).await,
                PollStep::Answer(s) => return Ok(super::LeaseOutcome::Queued(s)),
                PollStep::Wait => {}
            }
            tokio::select! {
                r = rx.changed() => {
                    if r.is_err() {
                        tokio::time::sleep_until(deadline).await;
                    }
                }
                () = tokio::time::sleep_until(deadline) => {}
            }
        }
    }

    fn poll_step(
        &self,
        ticket: &TicketId,
        terminal: &TerminalName,
        left: Duration,
    ) -> Result<PollStep, PoolError> {
        let (now, mut line, mut changed) = self.reconciled_line()?;
        let step = match line.queue.touch(ticket, terminal, now) {
            None => Err(PoolError::TicketNotFound),
            Some(s) => match s.held.clone() {
                Some(desktop) => {
                    let user = line
                        .queue
                        .tickets()
                        .iter()
                        .find(|t| &t.id == ticket)
                        .map(|t| t.user.clone())
                        .ok_or(PoolError::TicketNotFound)?;
                    let lease_id = LeaseId::from_random(random_bytes::<16>()?);
                    let result = self.store()?.acquire_with(&AcquireRequest {
                        lease_id: &lease_id,
                        terminal,
                        user: &user,
                        now,
                        pick: Pick::Exactly(&desktop),
                        reattach_within_ms: None,
                        waited: Some(Waited {
                            ticket,
                            waited_ms: s.waited_ms,
                        }),
                        terminal_limit: Some(self.inner.cfg.leases_per_terminal),
                    });
                    changed = true;
                    // A hold that is gone is looked at again at once: the notification
                    // wakes this poll.
                    self.settle_hold(&mut line, ticket, &desktop, s.waited_ms, result, now)
                        .map(|a| a.map_or(PollStep::Wait, PollStep::Lease))
                }
                None => {
                    let now_told = (s.position, s.waiting);
                    if left.is_zero() || line.told.get(ticket) != Some(&now_told) {
                        line.told.insert(ticket.clone(), now_told);
                        Ok(PollStep::Answer(self.to_wire(&s)))
                    } else {
                        Ok(PollStep::Wait)
                    }
                }
            },
        };
        drop(line);
        if changed {
            self.notify_line_changed();
        }
        step
    }

    /// `DELETE /v1/queue/{ticket}`: the terminal leaves the line; a desktop held for it
    /// goes to the next ticket.
    pub fn leave_queue(&self, ticket: &TicketId, terminal: &TerminalName) -> Result<(), PoolError> {
        let now = now_ms();
        let mut line = self.line()?;
        let t = line
            .queue
            .leave(ticket, terminal)
            .ok_or(PoolError::TicketNotFound)?;
        self.left_line(&mut line, &t, LeftBecause::Cancelled, now);
        self.reconcile(&mut line, now)?;
        drop(line);
        self.notify_line_changed();
        Ok(())
    }

    /// Removes the tickets whose terminals stopped polling and those whose holds ran
    /// out, and offers their desktops to the next tickets (from the sweep loop).
    pub(super) fn expire_tickets(&self) -> Result<(), PoolError> {
        let now = now_ms();
        let mut line = self.line()?;
        if line.queue.is_empty() {
            return Ok(());
        }
        // A ticket being polled is seen now.
        let Line { queue, polling, .. } = &mut *line;
        for ticket in polling.keys() {
            touch_own(queue, ticket, now);
        }
        let gone = line
            .queue
            .expire(now, millis(self.inner.cfg.queue.ticket_timeout));
        for (t, why) in &gone {
            tracing::info!(terminal = %t.terminal, user = %t.user, reason = why.as_str(),
                "ticket left the line");
            self.left_line(&mut line, t, *why, now);
        }
        let changed = self.reconcile(&mut line, now)? || !gone.is_empty();
        drop(line);
        if changed {
            self.notify_line_changed();
        }
        Ok(())
    }

    /// A desktop became clean: hold it for the line, if anyone waits.
    pub(super) fn offer_clean(&self) {
        let changed = self
            .line()
            .and_then(|mut line| self.reconcile(&mut line, now_ms()));
        match changed {
            Ok(true) => self.notify_line_changed(),
            Ok(false) => {}
            Err(e) => {
                tracing::error!(error = %crate::ErrorChain(&e), "could not offer a clean desktop to the waiting line");
            }
        }
    }

    /// The waiting line as the console shows it: each ticket in order (the head first),
    /// with its terminal, user, when it joined and the desktop held for it.
    pub fn waiting_line(&self) -> Vec<Ticket> {
        self.line()
            .map(|l| l.queue.tickets().to_vec())
            .unwrap_or_default()
    }

    /// How many tickets wait and how many desktops are held, for `/metrics`.
    pub(super) fn line_counts(&self) -> (usize, usize) {
        self.line()
            .map(|l| (l.queue.len(), l.queue.held_count()))
            .unwrap_or_default()
    }

    /// The time now and the line, reconciled (see [`Pool::reconcile`]), with whether
    /// reconciling changed it.
    fn reconciled_line(&self) -> Result<(UnixMillis, MutexGuard<'_, Line>, bool), PoolError> {
        let now = now_ms();
        let mut line = self.line()?;
        let changed = self.reconcile(&mut line, now)?;
        Ok((now, line, changed))
    }

    /// Gives back holds on desktops that are no longer clean and holds every clean
    /// desktop nobody holds for the first ticket without one. Returns whether the line
    /// changed. Does nothing (and reads nothing) when the line is empty.
    fn reconcile(&self, line: &mut Line, now: UnixMillis) -> Result<bool, PoolError> {
        if line.queue.is_empty() {
            return Ok(false);
        }
        let clean: Vec<Candidate> = self
            .store()?
            .desktops()?
            .into_iter()
            .filter(|r| r.state == DesktopState::Clean && !r.drained)
            .map(|r| Candidate {
                id: r.id,
                clean_since: r.since,
            })
            .collect();
        let hold_ms = millis(self.inner.cfg.queue.hold);
        let done = line.queue.reconcile(&clean, now, hold_ms);
        for (ticket, desktop) in &done.dropped {
            self.audit_hold_lost(ticket, desktop);
        }
        for (desktop, ticket) in &done.held {
            if let Some(t) = line.queue.tickets().iter().find(|t| &t.id == ticket) {
                tracing::info!(desktop = %desktop, terminal = %t.terminal, "desktop held for the head of the line");
                self.record_audit(
                    AuditEntry::new("queue_held")
                        .terminal(&t.terminal)
                        .user(&t.user)
                        .desktop(desktop)
                        .details(json!({"ticket": ticket, "hold_ms": hold_ms})),
                );
            }
        }
        Ok(done.changed())
    }

    /// The store's answer to leasing the `desktop` held for `ticket`: a new lease takes
    /// the ticket out of the line (granted); a re-attached lease leaves the hold alone;
    /// a desktop that is no longer clean is given back and the ticket keeps its place
    /// (`None`).
    fn settle_hold(
        &self,
        line: &mut Line,
        ticket: &TicketId,
        desktop: &DesktopId,
        waited_ms: i64,
        result: Result<Acquired, StoreError>,
        now: UnixMillis,
    ) -> Result<Option<Acquired>, PoolError> {
        match result {
            Ok(a) => {
                if !a.reattached {
                    line.queue.take_hold(ticket);
                    self.forget(line, ticket, "granted", waited_ms);
                }
                Ok(Some(a))
            }
            Err(StoreError::NoFreeDesktop) => {
                self.hold_lost(line, ticket, desktop);
                self.reconcile(line, now)?;
                Ok(None)
            }
            Err(StoreError::LeaseLimit { limit, .. }) => {
                // The terminal holds as many leases as it may (it took one while it
                // waited): its ticket leaves the line and the desktop goes to the next.
                let terminal = line
                    .queue
                    .tickets()
                    .iter()
                    .find(|t| &t.id == ticket)
                    .map(|t| t.terminal.clone());
                if let Some(t) = terminal.and_then(|term| line.queue.leave(ticket, &term)) {
                    self.left_line(line, &t, LeftBecause::Cancelled, now);
                }
                self.reconcile(line, now)?;
                Err(PoolError::LeaseLimit { limit })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The desktop held for `ticket` is no longer clean: the ticket keeps its place
    /// without it.
    fn hold_lost(&self, line: &mut Line, ticket: &TicketId, desktop: &DesktopId) {
        line.queue.drop_hold(ticket);
        self.audit_hold_lost(ticket, desktop);
    }

    fn audit_hold_lost(&self, ticket: &TicketId, desktop: &DesktopId) {
        tracing::warn!(desktop = %desktop, "a desktop held for the line is no longer clean");
        self.record_audit(
            AuditEntry::new("queue_hold_dropped")
                .desktop(desktop)
                .details(json!({"ticket": ticket, "why": "the desktop is no longer clean"})),
        );
    }

    /// Audits a ticket that left the line without a lease.
    fn left_line(&self, line: &mut Line, t: &Ticket, why: LeftBecause, now: UnixMillis) {
        let waited_ms = now.saturating_sub(t.joined_at);
        let mut entry = AuditEntry::new("queue_left")
            .terminal(&t.terminal)
            .user(&t.user);
        if let Some((d, _)) = &t.hold {
            entry = entry.desktop(d);
        }
        self.record_audit(entry.details(json!({
            "ticket": t.id,
            "reason": why.as_str(),
            "waited_ms": waited_ms,
        })));
        self.forget(line, &t.id, why.as_str(), waited_ms);
    }

    /// A ticket has left the line (`outcome`): its waiting time is measured.
    fn forget(&self, line: &mut Line, ticket: &TicketId, outcome: &str, waited_ms: i64) {
        line.told.remove(ticket);
        self.inner
            .metrics
            .queue_wait_seconds
            .get_or_create(&OutcomeLabel {
                outcome: outcome.into(),
            })
            .observe(waited_ms.max(0) as f64 / 1000.0);
    }
}

/// A poll of a ticket in progress. It ends when the poll answers, and also when its
/// future is dropped because the terminal went away mid-poll (the HTTP server drops a
/// handler whose connection closed): the ticket is seen then, and from then on its
/// timeout runs.
struct PollInProgress<'a> {
    pool: &'a Pool,
    ticket: &'a TicketId,
}

impl Drop for PollInProgress<'_> {
    fn drop(&mut self) {
        let Ok(mut line) = self.pool.line() else {
            return;
        };
        let Line { queue, polling, .. } = &mut *line;
        if let Some(n) = polling.get_mut(self.ticket) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                polling.remove(self.ticket);
            }
        }
        touch_own(queue, self.ticket, now_ms());
    }
}

/// Refreshes a ticket on behalf of its own terminal.
fn touch_own(q: &mut WaitQueue, ticket: &TicketId, now: UnixMillis) {
    if let Some(terminal) = q
        .tickets()
        .iter()
        .find(|t| &t.id == ticket)
        .map(|t| t.terminal.clone())
    {
        q.touch(ticket, &terminal, now);
    }
}

/// The desktops held for tickets.
fn held_desktops(q: &WaitQueue) -> Vec<DesktopId> {
    q.tickets()
        .iter()
        .filter_map(|t| t.hold.as_ref().map(|(d, _)| d.clone()))
        .collect()
}
