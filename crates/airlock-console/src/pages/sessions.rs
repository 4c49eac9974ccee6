//! The sessions pages: a searchable, paged list of leases, and one session's timeline.
use super::search::{with_page, Params};
use super::{span, when};
use airlock_store::{SessionPage, SessionTimeline};
use maud::{html, Markup};

fn text_field(name: &str, label: &str, value: &str) -> Markup {
    html! { label { (label) input type="text" name=(name) value=(value) maxlength="128"; } }
}

fn time_field(name: &str, label: &str, value: &str) -> Markup {
    html! { label { (label) " (UTC)" input type="datetime-local" step="1" name=(name) value=(value); } }
}

/// The filter form shared by the sessions and audit pages; `audit` adds its fields.
pub(crate) fn filters(action: &str, p: &Params, audit: bool) -> Markup {
    html! {
        form.filters method="get" action=(action) role="search" {
            (text_field("user", "User", &p.user))
            (text_field("terminal", "Terminal", &p.terminal))
            (text_field("desktop", "Desktop", &p.desktop))
            @if audit {
                (text_field("lease", "Lease", &p.lease))
                (text_field("action", "Action", &p.action))
                label { "Event (DICOM code)" input type="text" inputmode="numeric" name="event" value=(p.event) maxlength="6"; }
                label { "Outcome" select name="outcome" {
                    @for (v, l) in [("", "any"), ("0", "0 success"), ("4", "4 minor failure"), ("8", "8 serious failure"), ("12", "12 major failure")] {
                        option value=(v) selected[p.outcome == v] { (l) }
                    }
                } }
                (text_field("text", "Details contain", &p.text))
            }
            (time_field("from", "From", &p.from))
            (time_field("to", "To", &p.to))
            button type="submit" { "Search" }
            " " a href=(action) { "Clear" }
        }
    }
}

/// The list of sessions.
pub(crate) fn list(p: &Params, page: &SessionPage, error: Option<&str>) -> Markup {
    html! {
        h1 { "Sessions" }
        (filters("/console/sessions", p, false))
        @if let Some(e) = error { p.notice.error role="alert" { (e) } }
        p.muted { (page.total) @if !page.total_exact { "+" } " session(s) match." }
        table.sessions {
            thead { tr {
                th scope="col" { "Granted" } th scope="col" { "User" } th scope="col" { "Terminal" }
                th scope="col" { "Desktop" } th scope="col" { "Held" } th scope="col" { "Ended" } th scope="col" { "Lease" }
            } }
            tbody {
                @for s in &page.sessions {
                    tr {
                        td { (when(s.lease.created_at)) }
                        td.user { (s.lease.user) }
                        td.terminal { (s.lease.terminal) }
                        td { (s.lease.desktop) }
                        td { (span(s.held_ms)) }
                        td { @match (&s.lease.end_reason, s.lease.ended_at) {
                            (Some(r), Some(t)) => { (r.as_str()) " at " (when(t)) }
                            _ => { span.badge.state-leased { "active" } }
                        } }
                        td { a href={"/console/sessions/" (s.lease.id)} { (s.lease.id) } }
                    }
                }
            }
        }
        @if let Some(next) = &page.next {
            p.pager { a href={"/console/sessions?" (with_page(p, next))} { "Older sessions →" } }
        }
    }
}

/// One session's timeline.
pub(crate) fn timeline(t: &SessionTimeline) -> Markup {
    let d = &t.durations;
    let dur = |v: Option<i64>| v.map(span).unwrap_or_else(|| "—".into());
    html! {
        h1 { "Session " (t.lease.id) }
        dl.session {
            dt { "User" } dd { (t.lease.user) }
            dt { "Terminal" } dd { (t.lease.terminal) }
            dt { "Desktop" } dd { (t.lease.desktop) }
            dt { "Granted" } dd { (when(t.lease.created_at)) }
            dt { "Ended" } dd { @match (&t.lease.end_reason, t.lease.ended_at) {
                (Some(r), Some(at)) => { (r.as_str()) " at " (when(at)) }
                _ => { "active" }
            } }
            dt { "Waited in line" } dd { (dur(d.waited_ms)) }
            dt { "Held" } dd { (dur(d.held_ms)) }
            dt { "Grant to display" } dd { (dur(d.to_display_ms)) }
            dt { "Display connected" } dd { (dur(d.display_connected_ms)) }
            dt { "Reset after it" } dd { (dur(d.reset_ms)) }
        }
        h2 { "Timeline" }
        table.timeline {
            thead { tr { th scope="col" { "Time" } th scope="col" { "+" } th scope="col" { "Step" } th scope="col" { "Outcome" } th scope="col" { "Details" } th scope="col" { "Record" } } }
            tbody {
                @for e in &t.timeline {
                    tr {
                        td { (when(e.record.record.ts)) }
                        td { (span(e.since_previous_ms)) }
                        td { (e.step) }
                        td { (super::audit::outcome(&e.record)) }
                        td { code { (e.record.record.details) } }
                        td { a href={"/console/audit?lease=" (t.lease.id)} { "#" (e.record.record.seq) } }
                    }
                }
            }
        }
    }
}
