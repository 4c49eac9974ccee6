//! The audit page: the chain's verification status (with the first broken link, if
//! any), a searchable, paged list of records with their DICOM event and outcome, and
//! the export links.
use super::search::{with_page, Params};
use super::when;
use airlock_store::{AuditPage, AuditView, ChainStatus};
use maud::{html, Markup};

/// A record's outcome, as text (and colour).
pub(crate) fn outcome(v: &AuditView) -> Markup {
    let o = v.atna.outcome;
    let class = if o.code() == 0 {
        "state-clean"
    } else {
        "state-failure"
    };
    html! { span class={"badge " (class)} title={"EventOutcomeIndicator " (o.code())} { (o.code()) " " (o.meaning()) } }
}

/// The chain's status box.
pub(crate) fn chain(s: &ChainStatus, csrf: &str) -> Markup {
    html! {
        section.chain aria-labelledby="chain-h" {
            h2 id="chain-h" { "Hash chain" }
            @if let Some(b) = &s.first_broken {
                p.notice.error role="alert" id="chain-status" data-intact="false" {
                    strong { "BROKEN" } " — first broken link: record " strong id="first-broken" { (b.seq) } ": " (b.why)
                }
            } @else if let Some(e) = &s.error {
                p.notice.error id="chain-status" data-intact="unknown" { "Cannot verify now: " (e) }
            } @else {
                p.notice.ok id="chain-status" data-intact="true" {
                    strong { "INTACT" } " — " (s.verified_records) " record(s) verified up to record " (s.verified_seq)
                    @if let Some(t) = s.last_check_at { " (checked " (when(t)) ")" }
                }
            }
            p.muted {
                @match &s.last_full {
                    Some(f) => { "Last full re-verification: " (when(f.finished_at)) ", " (f.records) " records in " (f.duration_ms) " ms, " @if f.intact { "intact" } @else { "broken" } "." }
                    None => { "No full re-verification yet (new records are checked every few seconds; old ones again at each full check)." }
                }
                @if s.full_check_running { " A full check is running." }
            }
            form method="post" action="/console/audit/verify" {
                input type="hidden" name="csrf" value=(csrf);
                button type="submit" { "Re-verify the whole chain now" }
            }
        }
    }
}

/// The page body.
pub(crate) fn body(
    p: &Params,
    page: Option<&AuditPage>,
    status: &ChainStatus,
    csrf: &str,
    error: Option<&str>,
) -> Markup {
    html! {
        h1 { "Audit trail" }
        (chain(status, csrf))
        h2 { "Records" }
        (super::sessions::filters("/console/audit", p, true))
        @if let Some(e) = error { p.notice.error role="alert" { (e) } }
        @if let Some(page) = page {
            p.muted {
                (page.total) @if !page.total_exact { "+" } " record(s) match. Export them: "
                a href={"/console/audit/export?format=csv&" (with_page(p, ""))} { "CSV" } ", "
                a href={"/console/audit/export?format=jsonl&" (with_page(p, ""))} { "JSON lines" } "."
            }
            table.audit {
                thead { tr {
                    th scope="col" { "#" } th scope="col" { "Time" } th scope="col" { "Action" } th scope="col" { "Event" }
                    th scope="col" { "Outcome" } th scope="col" { "User" } th scope="col" { "Terminal" } th scope="col" { "Desktop" }
                    th scope="col" { "Lease" } th scope="col" { "Details" }
                } }
                tbody {
                    @for v in &page.records {
                        @let r = &v.record;
                        tr id={"audit-" (r.seq)} {
                            td { (r.seq) }
                            td { (when(r.ts)) }
                            td { (r.action) }
                            td title=(v.atna.event_id.meaning) { (v.atna.event_id.code) " " (v.atna.event_id.meaning) }
                            td { (outcome(v)) }
                            td { (r.user.as_deref().unwrap_or("")) }
                            td { (r.terminal.as_deref().unwrap_or("")) }
                            td { (r.desktop.as_deref().unwrap_or("")) }
                            td { @if let Some(l) = &r.lease { a href={"/console/sessions/" (l)} { (l) } } }
                            td { code { (r.details) } }
                        }
                    }
                }
            }
            @if let Some(next) = page.next_before {
                p.pager { a href={"/console/audit?" (with_page(p, &next.to_string()))} { "Older records →" } }
            }
        }
    }
}
