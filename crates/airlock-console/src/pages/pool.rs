//! The pool page: the headroom and why the pool is short, the waiting line, and every
//! desktop with its lease, display, USB device and resets, each with its actions.
use super::{badge, span, when};
use airlock_core::admin::DesktopAction;
use airlock_core::queue::Ticket;
use airlock_core::DesktopState;
use airlock_pool::{DesktopView, PoolStatus};
use maud::{html, Markup};

/// What the pool page shows, read at one moment.
pub(crate) struct PoolSnapshot {
    pub desktops: Vec<DesktopView>,
    pub status: PoolStatus,
    pub line: Vec<Ticket>,
    pub now_ms: i64,
    pub min_clean: usize,
}

/// A message above the table after an action (or its failure).
pub(crate) enum Notice {
    Done(String),
    Failed(String),
}

/// The whole page body.
pub(crate) fn body(s: &PoolSnapshot, csrf: &str, notice: Option<&Notice>) -> Markup {
    html! {
        h1 { "Pool" }
        @match notice {
            Some(Notice::Done(m)) => { p.notice.ok role="status" { (m) } }
            Some(Notice::Failed(m)) => { p.notice.error role="alert" { (m) } }
            None => {}
        }
        div id="pool-live" data-refresh="/console/pool/live" aria-live="polite" {
            (live(s, csrf))
        }
    }
}

/// The part the page refreshes by itself: headroom, line and desktops.
pub(crate) fn live(s: &PoolSnapshot, csrf: &str) -> Markup {
    let clean = s.status.counts.clean;
    let short = clean < s.min_clean;
    html! {
        section.headroom.short[short] aria-labelledby="headroom-h" {
            h2 id="headroom-h" { "Headroom" }
            p.big {
                strong { (clean) } " clean of " (s.desktops.len()) " desktops "
                "(minimum " (s.min_clean) "): "
                @if short { span.badge.state-broken { "SHORT" } } @else { span.badge.state-clean { "OK" } }
            }
            p.counts {
                "leased " (s.status.counts.leased)
                " · dirty " (s.status.counts.dirty)
                " · resetting " (s.status.counts.resetting)
                " · starting " (s.status.counts.starting)
                " · broken " (s.status.counts.broken)
                " · drained " (s.status.counts.drained)
                " · reset method " (s.status.reset_method) " · accel " (s.status.accel)
            }
            @if short || !s.status.problems.is_empty() {
                h3 { "Why" }
                ul.why {
                    @if short && s.status.counts.leased > 0 {
                        li { (s.status.counts.leased) " desktop(s) in use" }
                    }
                    @if s.status.counts.resetting + s.status.counts.dirty + s.status.counts.starting > 0 {
                        li { (s.status.counts.resetting + s.status.counts.dirty + s.status.counts.starting) " desktop(s) being reset or started" }
                    }
                    @if s.status.counts.drained > 0 {
                        li { (s.status.counts.drained) " desktop(s) drained by an admin" }
                    }
                    @for d in s.desktops.iter().filter(|d| d.state == DesktopState::Broken) {
                        li { "desktop " strong { (d.id) } " is broken: " (d.reason.as_deref().unwrap_or("no reason recorded")) }
                    }
                    @for p in &s.status.problems {
                        li { (p) }
                    }
                }
            }
        }
        section aria-labelledby="line-h" {
            h2 id="line-h" { "Waiting line (" (s.line.len()) ")" }
            @if s.line.is_empty() {
                p.muted { "Nobody is waiting." }
            } @else {
                table.line {
                    thead { tr { th scope="col" { "#" } th scope="col" { "Terminal" } th scope="col" { "User" } th scope="col" { "Waiting" } th scope="col" { "Desktop held" } } }
                    tbody {
                        @for (i, t) in s.line.iter().enumerate() {
                            tr {
                                td { (i + 1) }
                                td { (t.terminal) }
                                td { (t.user) }
                                td { (span(s.now_ms - t.joined_at)) }
                                td { @if let Some((d, _)) = &t.hold { (d) } @else { "—" } }
                            }
                        }
                    }
                }
            }
        }
        section aria-labelledby="desktops-h" {
            h2 id="desktops-h" { "Desktops" }
            table.desktops {
                thead {
                    tr {
                        th scope="col" { "Desktop" }
                        th scope="col" { "State" }
                        th scope="col" { "Since" }
                        th scope="col" { "Terminal" }
                        th scope="col" { "User" }
                        th scope="col" { "Display" }
                        th scope="col" { "USB device" }
                        th scope="col" { "Resets" }
                        th scope="col" { "Last reset" }
                        th scope="col" { "Action" }
                    }
                }
                tbody {
                    @for d in &s.desktops {
                        (row(d, s.now_ms, csrf))
                    }
                }
            }
        }
    }
}

/// The actions that fit a desktop now, by their form value and label.
pub(crate) fn actions_for(d: &DesktopView) -> Vec<(&'static str, &'static str)> {
    let mut v = Vec::new();
    if d.lease.is_some() {
        v.push(("end-lease", "End the lease"));
    }
    for a in DesktopAction::ALL {
        let fits = match a {
            DesktopAction::Drain => !d.drained,
            DesktopAction::Return => d.drained,
            DesktopAction::Reset | DesktopAction::Rebuild => {
                !matches!(d.state, DesktopState::Starting | DesktopState::Resetting)
            }
        };
        if fits {
            v.push((
                a.as_str(),
                match a {
                    DesktopAction::Drain => "Drain",
                    DesktopAction::Return => "Return to service",
                    DesktopAction::Reset => "Reset now",
                    DesktopAction::Rebuild => "Rebuild from golden image",
                },
            ));
        }
    }
    v
}

fn row(d: &DesktopView, now_ms: i64, csrf: &str) -> Markup {
    let state = d.shown_state();
    let actions = actions_for(d);
    html! {
        tr id={"desktop-" (d.id)} data-state=(state) {
            th scope="row" { (d.id) }
            td { (badge(state)) @if let Some(r) = &d.drain_reason { br; small { "drained: " (r) } } @if d.state == DesktopState::Broken { @if let Some(r) = &d.reason { br; small { (r) } } } }
            td title=(when(d.since)) { (span(now_ms - d.since)) }
            td.terminal { (d.terminal.as_ref().map(|t| t.to_string()).unwrap_or_else(|| "—".into())) }
            td.user { (d.user.as_ref().map(|u| u.to_string()).unwrap_or_else(|| "—".into())) }
            td { @if d.display_connections > 0 { "connected (" (d.display_connections) ")" } @else if d.lease.is_some() { "not connected" } @else { "—" } }
            td { (d.usb_device.as_deref().unwrap_or("—")) }
            td { (d.resets) }
            td {
                @match (d.last_reset_s, &d.last_reset_method) {
                    (Some(s), Some(m)) => { (format!("{s:.2} s")) " (" (m) ")" }
                    (Some(s), None) => { (format!("{s:.2} s")) }
                    _ => { "—" }
                }
            }
            td {
                @if actions.is_empty() {
                    span.muted { "busy" }
                } @else {
                    form.action method="post" action={"/console/desktops/" (d.id)} {
                        input type="hidden" name="csrf" value=(csrf);
                        label { span.sr { "Action for " (d.id) } select name="action" aria-label={"Action for " (d.id)} {
                            @for (value, label) in &actions { option value=(value) { (label) } }
                        } }
                        " "
                        label { span.sr { "Reason" } input type="text" name="reason" required maxlength="500" placeholder="reason (audited)" aria-label={"Reason for " (d.id)}; }
                        " "
                        button type="submit" { "Apply" }
                    }
                }
            }
        }
    }
}
