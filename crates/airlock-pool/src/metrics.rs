//! Prometheus metrics of the pool.
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Metric, Registry};
use std::sync::Mutex;

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
pub(crate) struct InfoLabel {
    pub version: String,
    pub accel: String,
    pub qemu: String,
    pub reset_method: String,
}

/// The pool's metrics registry.
pub struct Metrics {
    registry: Mutex<Registry>,
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
    pub(crate) info: Family<InfoLabel, Gauge>,
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
/// their values).
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
            desktops: registered(r, "desktops", "Desktops by state", Family::default()),
            leases_active: registered(r, "leases_active", "Active leases", Gauge::default()),
            acquire_seconds: registered(
                r,
                "acquire_seconds",
                "Time to grant a lease (database transaction + display password)",
                Histogram::new(acquire_buckets),
            ),
            acquires: registered(r, "acquires", "Lease requests by result", Family::default()),
            reset_seconds: registered(
                r,
                "reset_seconds",
                "Release-to-clean time of successful resets, by method",
                Family::new_with_constructor(reset_histogram),
            ),
            resets: registered(
                r,
                "resets",
                "Reset attempts by method and result",
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
            info: registered(r, "info", "Broker build and pool facts", Family::default()),
            registry: Mutex::new(registry),
        }
    }

    /// Renders the registry in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Ok(r) = self.registry.lock() {
            let _ = prometheus_client::encoding::text::encode(&mut out, &r);
        }
        out
    }
}
