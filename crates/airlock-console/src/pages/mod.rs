//! The console's HTML, rendered on the server (maud escapes every value). Each page
//! works without JavaScript; `console.js` only refreshes the pool table in place.
pub(crate) mod audit;
pub(crate) mod login;
pub(crate) mod pool;
pub(crate) mod search;
pub(crate) mod sessions;

use maud::{html, Markup, DOCTYPE};

/// The navigation, the logged-in account and the logout form around a page's body.
pub(crate) struct Frame<'a> {
    pub title: &'a str,
    /// The account and the CSRF token of its session (for the logout form); `None` on
    /// the login page.
    pub admin: Option<(&'a str, &'a str)>,
    /// Which navigation entry is current.
    pub current: &'a str,
}

pub(crate) fn page(f: &Frame<'_>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (f.title) " · Airlock console" }
                link rel="stylesheet" href="/console/static/console.css";
                script src="/console/static/console.js" defer {}
            }
            body {
                header {
                    a.brand href="/console" { "Airlock" }
                    @if let Some((name, csrf)) = f.admin {
                        nav aria-label="Console" {
                            @for (href, label) in [("/console", "Pool"), ("/console/sessions", "Sessions"), ("/console/audit", "Audit")] {
                                @if label == f.current {
                                    a href=(href) aria-current="page" { (label) }
                                } @else {
                                    a href=(href) { (label) }
                                }
                            }
                        }
                        form.logout method="post" action="/console/logout" {
                            input type="hidden" name="csrf" value=(csrf);
                            span.who { "Logged in as " strong { (name) } }
                            button type="submit" { "Log out" }
                        }
                    }
                }
                main id="main" { (body) }
            }
        }
    }
}

/// A UTC time, to the second.
pub(crate) fn when(ms: i64) -> String {
    let fmt =
        time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second] UTC");
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&fmt).ok())
        .unwrap_or_else(|| ms.to_string())
}

/// A duration in words an admin reads at a glance (`45 s`, `3 min 20 s`, `2 h 5 min`).
pub(crate) fn span(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min {} s", s / 60, s % 60),
        _ => format!("{} h {} min", s / 3600, (s % 3600) / 60),
    }
}

/// A state shown as text and colour (the class sets the colour; the text says it).
pub(crate) fn badge(state: &str) -> Markup {
    html! { span class={"badge state-" (state)} { (state) } }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_spans_read_well() {
        assert_eq!(when(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(when(1_796_300_000_123), "2026-12-03 12:13:20 UTC");
        assert_eq!(span(-5), "0 s");
        assert_eq!(span(45_000), "45 s");
        assert_eq!(span(200_000), "3 min 20 s");
        assert_eq!(span(7_500_000), "2 h 5 min");
    }

    #[test]
    fn values_are_escaped() {
        let m = badge("<script>");
        assert!(!m.into_string().contains("<script>"));
    }
}
