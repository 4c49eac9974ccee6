//! What the console costs the broker itself: the time it took to answer each request,
//! read from its own request log (`airlockd` logs every request's route pattern, status
//! and milliseconds at debug level; the bench runs it with `airlockd=debug`).

use crate::bench_broker::stats::percentile;
use serde::Serialize;
use std::collections::BTreeMap;

/// One route's answers during the run.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RouteTimes {
    pub method: String,
    pub route: String,
    pub requests: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// The value of `key=` in a log line's fields (up to the next space).
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let at = line.find(&format!(" {key}="))? + key.len() + 2;
    line.get(at..)?.split(' ').next()
}

/// Every route's request times in the broker's log text, sorted by method and route.
pub fn route_times(log: &str) -> Vec<RouteTimes> {
    let mut by: BTreeMap<(String, String), Vec<f64>> = BTreeMap::new();
    for line in log.lines() {
        if !(line.contains(": request ") || line.contains(": slow request ")) {
            continue;
        }
        let (Some(method), Some(route), Some(ms)) = (
            field(line, "method"),
            field(line, "route"),
            field(line, "ms").and_then(|m| m.parse::<f64>().ok()),
        ) else {
            continue;
        };
        by.entry((method.to_owned(), route.to_owned()))
            .or_default()
            .push(ms);
    }
    by.into_iter()
        .map(|((method, route), ms)| RouteTimes {
            requests: ms.len(),
            p50_ms: percentile(&ms, 50.0),
            p99_ms: percentile(&ms, 99.0),
            max_ms: ms.iter().copied().fold(0.0, f64::max),
            method,
            route,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines_are_grouped_by_route() {
        let log = "\
2026-12-03T14:18:48.348474Z DEBUG airlockd::api: request method=GET route=/console/audit status=200 ms=2.5
2026-12-03T14:18:48.4Z  INFO airlockd: something else ms=900
2026-12-03T14:18:49Z DEBUG airlockd::api: request method=POST route=/v1/leases status=201 ms=3
2026-12-03T14:18:50Z  WARN airlockd::api: slow request method=GET route=/console/audit status=200 ms=1500.25
2026-12-03T14:18:51Z DEBUG airlockd::api: request method=GET route=/console/audit status=200 ms=bad
";
        let t = route_times(log);
        assert_eq!(t.len(), 2, "{t:?}");
        assert_eq!(
            (t[0].method.as_str(), t[0].route.as_str(), t[0].requests),
            ("GET", "/console/audit", 2)
        );
        assert_eq!(t[0].max_ms, 1500.25);
        assert_eq!((t[1].route.as_str(), t[1].requests), ("/v1/leases", 1));
    }
}
