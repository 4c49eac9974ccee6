//! Prometheus metrics of the pool and of the broker around it.
//!
//! Counters and histograms are updated where their event happens (the engine's lease,
//! reset and queue code, the USB relay, the HTTP layer through [`Metrics::count_refused`]);
//! what describes the pool now (desktops by state, active leases, the waiting line, open
//! USB streams) is computed from the pool at each scrape (`Pool::render_metrics`), so
//! a new state appears without a change here. No label carries a terminal, user, lease
//! or patient: only states, methods, results, reasons, directions and routes.
//!
//! The registry encodes OpenMetrics; [`to_prometheus_text`] turns that into the
//! Prometheus text format 0.0.4 (what `promtool check metrics` and most tools read);
//! `/metrics` serves the one the scraper asks for.
use crate::relay::Refusal;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Metric, Registry};
use std::sync::{Mutex, OnceLock};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct StateLabel {
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ResultLabel {
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct MethodLabel {
    pub method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct MethodResultLabel {
    pub method: String,
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ReasonLabel {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct OutcomeLabel {
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct DirectionLabel {
    pub direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusedLabel {
    route: String,
    status: String,
    error: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct InfoLabel {
    pub version: String,
    pub accel: String,
    pub qemu: String,
    pub reset_method: String,
}

/// The pool's metrics registry.
pub struct Metrics {
    registry: Mutex<Registry>,
    /// Held through a scrape, so that two scrapes do not interleave their reading of
    /// the pool (the desktop gauges are cleared and set again).
    pub(crate) scrape: Mutex<()>,
    pub(crate) desktops: Family<StateLabel, Gauge>,
    pub(crate) leases_active: Gauge,
    pub(crate) acquire_seconds: Histogram,
    pub(crate) acquires: Family<ResultLabel, Counter>,
    pub(crate) reset_seconds: Family<MethodLabel, Histogram>,
    pub(crate) resets: Family<MethodResultLabel, Counter>,
    pub(crate) leases_ended: Family<ReasonLabel, Counter>,
    pub(crate) queue_waiting: Gauge,
    pub(crate) queue_held: Gauge,
    pub(crate) queue_wait_seconds: Family<OutcomeLabel, Histogram>,
    refused: Family<RefusedLabel, Counter>,
    pub(crate) usb_streams_active: Gauge,
    pub(crate) usb_bytes: Family<DirectionLabel, Counter>,
    usb_devices_refused: Family<ReasonLabel, Counter>,
    usb_control_refused: Counter,
    pub(crate) info: Family<InfoLabel, Gauge>,
    /// The audit chain's check: registered at its first report, so that no value is
    /// claimed before a check ran.
    audit_chain: OnceLock<AuditChainMetrics>,
    audit_last_full_verify: OnceLock<Gauge>,
    /// Audit forwarding: registered at its first report, i.e. only when forwarding is
    /// configured; absent otherwise (never a backlog of 0 that means "not forwarding").
    audit_forward: OnceLock<AuditForwardMetrics>,
    audit_forward_last_success: OnceLock<Gauge>,
}

struct AuditChainMetrics {
    intact: Gauge,
    verified_records: Gauge,
}

struct AuditForwardMetrics {
    backlog: Gauge,
    connected: Gauge,
    forwarded: Counter,
}

/// `n` as a gauge value.
pub(crate) fn saturating_i64(n: impl TryInto<i64>) -> i64 {
    n.try_into().unwrap_or(i64::MAX)
}

/// At most this many control requests are counted from one terminal report (a report's
/// count is the terminal's word; the cap keeps a lying terminal from wrapping the
/// counter).
const MAX_REPORTED_REFUSALS: u64 = 1 << 32;

/// The label of a relay refusal: its kind, never the device's numbers.
fn refusal_reason(r: &Refusal) -> &'static str {
    match r {
        Refusal::NoInterfaces => "no_interfaces",
        Refusal::Interface { .. } => "interface_class",
        Refusal::DeviceClass(_) => "device_class",
        Refusal::Endpoint { .. } => "endpoint_type",
        Refusal::Unannounced => "unannounced",
        Refusal::Traffic(_) => "traffic_type",
        Refusal::BeforeHello => "before_hello",
        Refusal::Malformed { .. } => "malformed_descriptor",
        Refusal::DescriptorType { .. } => "descriptor_type",
        Refusal::ReplyTooLong { .. } => "descriptor_too_long",
    }
}

fn reset_histogram() -> Histogram {
    Histogram::new([
        0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0,
    ])
}

fn queue_wait_histogram() -> Histogram {
    Histogram::new([
        0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
    ])
}

/// Registers `metric` as `airlock_NAME` with `help`; the metric, to keep (clones share
/// their values). Counters get `_total` appended by the encoder.
fn registered<M: Metric + Clone>(registry: &mut Registry, name: &str, help: &str, metric: M) -> M {
    registry.register(name, help, metric.clone());
    metric
}

impl Metrics {
    pub(crate) fn new() -> Metrics {
        let mut registry = Registry::with_prefix("airlock");
        let r = &mut registry;
        let acquire_buckets = [
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
        ];
        Metrics {
            desktops: registered(
                r,
                "desktops",
                "Desktops by the state the console shows: their life-cycle state, or draining (drained by an admin, lease still running) or drained (out of service); every state is listed, also at 0",
                Family::default(),
            ),
            leases_active: registered(r, "leases_active", "Active leases", Gauge::default()),
            acquire_seconds: registered(
                r,
                "acquire_seconds",
                "Time to grant a lease (database transaction and display password)",
                Histogram::new(acquire_buckets),
            ),
            acquires: registered(
                r,
                "acquires",
                "Lease requests by result (granted, reattached, queued, no_free_desktop, lease_limit, rate_limited, error)",
                Family::default(),
            ),
            reset_seconds: registered(
                r,
                "reset_seconds",
                "Release-to-clean time of successful resets, by method",
                Family::new_with_constructor(reset_histogram),
            ),
            resets: registered(
                r,
                "resets",
                "Reset attempts by method and result (ok, failed)",
                Family::default(),
            ),
            leases_ended: registered(r, "leases_ended", "Ended leases by reason", Family::default()),
            queue_waiting: registered(
                r,
                "queue_waiting",
                "Terminals waiting in line for a desktop",
                Gauge::default(),
            ),
            queue_held: registered(
                r,
                "queue_held",
                "Clean desktops held for the terminal at the head of the line",
                Gauge::default(),
            ),
            queue_wait_seconds: registered(
                r,
                "queue_wait_seconds",
                "Time from joining the line to leaving it, by outcome (granted, cancelled, expired, hold_expired)",
                Family::new_with_constructor(queue_wait_histogram),
            ),
            refused: registered(
                r,
                "http_requests_refused",
                "HTTP requests answered 429 (rate limited) or 503 (no desktop or desktop unavailable), by route, status and error code",
                Family::default(),
            ),
            usb_streams_active: registered(
                r,
                "usb_streams_active",
                "Open USB streams from terminals to desktops",
                Gauge::default(),
            ),
            usb_bytes: registered(
                r,
                "usb_forwarded_bytes",
                "usbredir bytes the relay passed, by direction (to_desktop, to_terminal)",
                Family::default(),
            ),
            usb_devices_refused: registered(
                r,
                "usb_devices_refused",
                "USB streams the relay closed because the device or its traffic is not mass storage, by reason",
                Family::default(),
            ),
            usb_control_refused: registered(
                r,
                "usb_control_requests_refused",
                "USB control requests of desktops that terminals refused to pass to their drive, as the terminals reported",
                Counter::default(),
            ),
            info: registered(
                r,
                "info",
                "Broker build and pool facts (always 1)",
                Family::default(),
            ),
            registry: Mutex::new(registry),
            scrape: Mutex::new(()),
            audit_chain: OnceLock::new(),
            audit_last_full_verify: OnceLock::new(),
            audit_forward: OnceLock::new(),
            audit_forward_last_success: OnceLock::new(),
        }
    }

    /// Counts a request the HTTP layer refused with `status` (429 or 503) and `error`
    /// (its wire error code), on `route` (the route's pattern, never a concrete id).
    pub fn count_refused(&self, route: &str, status: u16, error: &str) {
        self.refused
            .get_or_create(&RefusedLabel {
                route: route.into(),
                status: status.to_string(),
                error: error.into(),
            })
            .inc();
    }

    /// Counts a lease request the API refused before it reached the pool (`429`).
    pub fn count_acquire_rate_limited(&self) {
        self.acquires
            .get_or_create(&ResultLabel {
                result: "rate_limited".into(),
            })
            .inc();
    }

    /// Counts bytes the USB relay passed towards the desktop or the terminal.
    pub(crate) fn usb_bytes_counter(&self, to_desktop: bool) -> Counter {
        self.usb_bytes
            .get_or_create(&DirectionLabel {
                direction: if to_desktop {
                    "to_desktop"
                } else {
                    "to_terminal"
                },
            })
            .clone()
    }

    /// Counts a device (stream) the relay refused.
    pub(crate) fn count_usb_refusal(&self, r: &Refusal) {
        self.usb_devices_refused
            .get_or_create(&ReasonLabel {
                reason: refusal_reason(r).into(),
            })
            .inc();
    }

    /// Counts control requests a terminal reported refused.
    pub(crate) fn count_usb_control_refused(&self, n: u64) {
        self.usb_control_refused
            .inc_by(n.min(MAX_REPORTED_REFUSALS));
    }

    /// The registry in the OpenMetrics text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Ok(r) = self.registry.lock() {
            let _ = prometheus_client::encoding::text::encode(&mut out, &r);
        }
        out
    }

    /// Registers `metric` under `airlock_NAME` after start-up (for metrics that appear
    /// only once their subsystem reports).
    fn register_late<M: Metric + Clone>(&self, name: &str, help: &str, metric: M) -> M {
        if let Ok(mut r) = self.registry.lock() {
            r.register(name, help, metric.clone());
        }
        metric
    }

    /// Reports the audit chain's verification: whether every record verified, how many
    /// records are verified so far, and when the last full (from the first record) check
    /// finished, in Unix seconds. The metrics appear at the first report.
    pub fn set_audit_chain(
        &self,
        intact: bool,
        verified_records: u64,
        last_full_check_unix: Option<i64>,
    ) {
        let m = self.audit_chain.get_or_init(|| AuditChainMetrics {
            intact: self.register_late(
                "audit_chain_intact",
                "1 when the audit log's hash chain verified up to its head, 0 when a link is broken",
                Gauge::default(),
            ),
            verified_records: self.register_late(
                "audit_verified_records",
                "Audit records whose hash chain has been verified",
                Gauge::default(),
            ),
        });
        m.intact.set(i64::from(intact));
        m.verified_records.set(saturating_i64(verified_records));
        if let Some(t) = last_full_check_unix {
            self.audit_last_full_verify
                .get_or_init(|| {
                    self.register_late(
                        "audit_last_full_verify_timestamp_seconds",
                        "When the last full verification of the audit chain finished (Unix time)",
                        Gauge::default(),
                    )
                })
                .set(t);
        }
    }

    fn audit_forward(&self) -> &AuditForwardMetrics {
        self.audit_forward.get_or_init(|| AuditForwardMetrics {
            backlog: self.register_late(
                "audit_forward_backlog",
                "Audit records stored but not yet accepted by the syslog server",
                Gauge::default(),
            ),
            connected: self.register_late(
                "audit_forward_connected",
                "1 while the connection to the syslog server is up",
                Gauge::default(),
            ),
            forwarded: self.register_late(
                "audit_forwarded",
                "Audit records sent to the syslog server",
                Counter::default(),
            ),
        })
    }

    /// Reports audit forwarding's state: records waiting, whether the syslog connection
    /// is up, and when a record was last sent (Unix seconds). Call it only when
    /// forwarding is configured: the forwarding metrics are absent until the first call.
    pub fn set_audit_forward(&self, backlog: u64, connected: bool, last_success_unix: Option<i64>) {
        let m = self.audit_forward();
        m.backlog.set(saturating_i64(backlog));
        m.connected.set(i64::from(connected));
        if let Some(t) = last_success_unix {
            self.audit_forward_last_success
                .get_or_init(|| {
                    self.register_late(
                        "audit_forward_last_success_timestamp_seconds",
                        "When an audit record was last accepted by the syslog server (Unix time)",
                        Gauge::default(),
                    )
                })
                .set(t);
        }
    }

    /// Counts `n` audit records sent to the syslog server.
    pub fn add_audit_forwarded(&self, n: u64) {
        self.audit_forward().forwarded.inc_by(n);
    }
}

/// The Prometheus text format 0.0.4 of `openmetrics`, the OpenMetrics text this
/// registry encodes: a counter family is named with its `_total` (as its samples are),
/// and the `# UNIT` and `# EOF` lines go. Nothing else differs for the gauges, counters
/// and histograms registered here (no info, stateset or `_created` samples).
pub fn to_prometheus_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let descriptor = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| line.strip_prefix(p).map(|rest| (p, rest)));
        if let Some((prefix, rest)) = descriptor {
            let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            if counters.contains(name) {
                out.push_str(prefix);
                out.push_str(name);
                out.push_str("_total ");
                out.push_str(tail);
                out.push('\n');
                continue;
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Metrics {
        let m = Metrics::new();
        m.acquires
            .get_or_create(&ResultLabel {
                result: "granted".into(),
            })
            .inc();
        m.acquire_seconds.observe(0.004);
        m.count_refused("/v1/leases", 503, "no_free_desktop");
        m.usb_bytes_counter(true).inc_by(80);
        m.count_usb_refusal(&Refusal::DeviceClass(3));
        m.count_usb_control_refused(u64::MAX);
        m
    }

    #[test]
    fn the_text_format_names_counters_with_their_total_and_has_no_eof() {
        let om = sample().render();
        assert!(om.contains("# TYPE airlock_acquires counter\n"), "{om}");
        assert!(om.ends_with("# EOF\n"), "{om}");
        let text = to_prometheus_text(&om);
        assert!(
            text.contains("# HELP airlock_acquires_total Lease requests"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE airlock_acquires_total counter\n"),
            "{text}"
        );
        assert!(
            text.contains("airlock_acquires_total{result=\"granted\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE airlock_acquire_seconds histogram\n"),
            "{text}"
        );
        assert!(text.contains("airlock_acquire_seconds_count 1\n"), "{text}");
        assert!(
            text.contains("airlock_http_requests_refused_total{route=\"/v1/leases\",status=\"503\",error=\"no_free_desktop\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("airlock_usb_forwarded_bytes_total{direction=\"to_desktop\"} 80\n"),
            "{text}"
        );
        assert!(
            text.contains("airlock_usb_devices_refused_total{reason=\"device_class\"} 1\n"),
            "{text}"
        );
        // A terminal's count is capped per report.
        assert!(
            text.contains(&format!(
                "airlock_usb_control_requests_refused_total {MAX_REPORTED_REFUSALS}\n"
            )),
            "{text}"
        );
        assert!(
            !text.contains("# EOF") && !text.contains("# UNIT"),
            "{text}"
        );
        // The text format's HELP knows no escapes but `\\` and `\n`: none are needed.
        for line in text.lines().filter(|l| l.starts_with("# HELP")) {
            assert!(!line.contains('\\'), "{line}");
        }
        // Every family is typed under the name of its samples.
        let typed: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split(' ').next())
            .collect();
        for sample in text.lines().filter(|l| !l.starts_with('#')) {
            let name = sample.split(['{', ' ']).next().unwrap_or_default();
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .filter(|b| typed.contains(b))
                .unwrap_or(name);
            assert!(typed.contains(&base), "{sample} has no TYPE in\n{text}");
        }
    }

    #[test]
    fn audit_metrics_appear_only_once_reported() {
        let m = Metrics::new();
        let text = m.render();
        assert!(!text.contains("airlock_audit"), "{text}");
        m.set_audit_chain(true, 42, None);
        let text = m.render();
        assert!(text.contains("airlock_audit_chain_intact 1\n"), "{text}");
        assert!(
            text.contains("airlock_audit_verified_records 42\n"),
            "{text}"
        );
        assert!(!text.contains("airlock_audit_last_full_verify"), "{text}");
        assert!(!text.contains("airlock_audit_forward"), "{text}");
        m.set_audit_chain(false, 43, Some(1_700_000_000));
        m.set_audit_forward(7, false, None);
        m.add_audit_forwarded(3);
        m.set_audit_forward(5, true, Some(1_700_000_001));
        let text = to_prometheus_text(&m.render());
        for line in [
            "airlock_audit_chain_intact 0\n",
            "airlock_audit_verified_records 43\n",
            "airlock_audit_last_full_verify_timestamp_seconds 1700000000\n",
            "airlock_audit_forward_backlog 5\n",
            "airlock_audit_forward_connected 1\n",
            "airlock_audit_forward_last_success_timestamp_seconds 1700000001\n",
            "# TYPE airlock_audit_forwarded_total counter\n",
            "airlock_audit_forwarded_total 3\n",
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
        // Registered once each, however often reported.
        assert_eq!(
            text.matches("# TYPE airlock_audit_forward_backlog ")
                .count(),
            1
        );
    }
}
