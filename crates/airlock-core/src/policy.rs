//! Pool policy: which clean desktop to hand out, how to reset a used one, and what to
//! tell a terminal when none is free.
use crate::{DesktopId, DesktopState, UnixMillis};
use serde::{Deserialize, Serialize};

/// A way to put a used desktop back to its clean state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResetMethod {
    /// A fresh QEMU process from the frozen template (RAM file mapped copy-on-write, saved
    /// device state, new overlay, new VM generation id). Nothing of the old process survives.
    TemplateClone,
    /// Load the internal `clean` snapshot in the running process.
    SnapshotRestore,
    /// A new overlay on the golden image and a cold boot: the repair path.
    Rebuild,
}

names! {
    /// The name used in config, audit and metrics.
    ResetMethod {
        TemplateClone => "template_clone",
        SnapshotRestore => "snapshot_restore",
        Rebuild => "rebuild",
    }
}

/// The ordered list of methods to try for one reset. The preferred method comes first and
/// a rebuild always comes last; if every step fails the desktop goes `broken`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResetPlan {
    steps: Vec<ResetMethod>,
}

impl ResetPlan {
    /// The plan for a pool whose configured method is `preferred`. `process_alive` says
    /// whether the desktop's QEMU process still runs: a snapshot restore needs it, so a
    /// dead process skips straight to the next step.
    pub fn new(preferred: ResetMethod, process_alive: bool) -> Self {
        let mut steps = Vec::with_capacity(2);
        match preferred {
            ResetMethod::SnapshotRestore if !process_alive => {}
            m => steps.push(m),
        }
        if preferred != ResetMethod::Rebuild {
            steps.push(ResetMethod::Rebuild);
        }
        Self { steps }
    }

    /// The methods to try, in order.
    pub fn steps(&self) -> &[ResetMethod] {
        &self.steps
    }
}

/// A clean desktop that could be handed out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub id: DesktopId,
    /// When it became clean.
    pub clean_since: UnixMillis,
}

/// Picks the desktop that has been clean the longest (ties by id), so wear and any
/// latent guest problem are spread evenly and a freshly reset desktop settles first.
pub fn choose_desktop(candidates: &[Candidate]) -> Option<&Candidate> {
    candidates
        .iter()
        .min_by(|a, b| a.clean_since.cmp(&b.clean_since).then(a.id.cmp(&b.id)))
}

/// How many seconds a terminal that found no free desktop should wait before asking again.
///
/// If desktops are being reset, about one typical reset; otherwise (all leased or broken)
/// a few heartbeat intervals, since a desktop frees only when a lease ends.
pub fn retry_after_s(
    counts: &StateCounts,
    typical_reset_ms: Option<u64>,
    heartbeat_interval_s: u64,
) -> u64 {
    let in_flight = counts.resetting + counts.dirty + counts.starting;
    if in_flight > 0 {
        let ms = typical_reset_ms.unwrap_or(5_000);
        ms.div_ceil(1000).clamp(1, 60)
    } else {
        heartbeat_interval_s.clamp(1, 60)
    }
}

/// How many desktops are in each state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct StateCounts {
    pub starting: usize,
    pub clean: usize,
    pub leased: usize,
    pub dirty: usize,
    pub resetting: usize,
    pub broken: usize,
    /// Drained by an admin and not leased (out of service, whatever their state; a
    /// drained desktop is counted here and not under its state).
    #[serde(default)]
    pub drained: usize,
}

impl StateCounts {
    /// Counts the given states.
    pub fn tally(states: impl IntoIterator<Item = DesktopState>) -> Self {
        let mut c = Self::default();
        for s in states {
            *c.slot(s) += 1;
        }
        c
    }

    fn slot(&mut self, s: DesktopState) -> &mut usize {
        match s {
            DesktopState::Starting => &mut self.starting,
            DesktopState::Clean => &mut self.clean,
            DesktopState::Leased => &mut self.leased,
            DesktopState::Dirty => &mut self.dirty,
            DesktopState::Resetting => &mut self.resetting,
            DesktopState::Broken => &mut self.broken,
        }
    }

    /// The count of one state.
    pub fn get(&self, s: DesktopState) -> usize {
        let mut c = *self;
        *c.slot(s)
    }
}

/// The median of a set of durations, if any.
pub fn median(values: &[u64]) -> Option<u64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_unstable();
    v.get(v.len() / 2).copied()
}

/// The `q`-quantile (0.0..=1.0, nearest rank) of a set of values.
pub fn quantile(values: &[u64], q: f64) -> Option<u64> {
    if values.is_empty() || !(0.0..=1.0).contains(&q) {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_unstable();
    let rank = (q * v.len() as f64).ceil() as usize;
    v.get(rank.saturating_sub(1).min(v.len() - 1)).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(id: &str, t: i64) -> Candidate {
        Candidate {
            id: DesktopId::parse(id).unwrap(),
            clean_since: t,
        }
    }

    #[test]
    fn plans() {
        use ResetMethod::*;
        assert_eq!(
            ResetPlan::new(TemplateClone, true).steps(),
            &[TemplateClone, Rebuild]
        );
        assert_eq!(
            ResetPlan::new(TemplateClone, false).steps(),
            &[TemplateClone, Rebuild]
        );
        assert_eq!(
            ResetPlan::new(SnapshotRestore, true).steps(),
            &[SnapshotRestore, Rebuild]
        );
        assert_eq!(ResetPlan::new(SnapshotRestore, false).steps(), &[Rebuild]);
        assert_eq!(ResetPlan::new(Rebuild, true).steps(), &[Rebuild]);
        for m in ResetMethod::ALL {
            assert_eq!(ResetMethod::parse(m.as_str()), Some(m));
            for alive in [true, false] {
                assert_eq!(ResetPlan::new(m, alive).steps().last(), Some(&Rebuild));
            }
        }
    }

    #[test]
    fn chooses_longest_clean_then_by_id() {
        assert_eq!(choose_desktop(&[]), None);
        let c = [cand("b", 5), cand("a", 5), cand("c", 9)];
        assert_eq!(choose_desktop(&c).unwrap().id.as_str(), "a");
        let c = [cand("b", 5), cand("a", 7)];
        assert_eq!(choose_desktop(&c).unwrap().id.as_str(), "b");
    }

    #[test]
    fn retry_after() {
        let mut c = StateCounts::tally([DesktopState::Leased, DesktopState::Resetting]);
        assert_eq!(retry_after_s(&c, Some(300), 10), 1);
        assert_eq!(retry_after_s(&c, Some(4_200), 10), 5);
        assert_eq!(retry_after_s(&c, None, 10), 5);
        c.resetting = 0;
        assert_eq!(retry_after_s(&c, Some(300), 10), 10);
        assert_eq!(retry_after_s(&c, Some(10_000_000), 1000), 60);
    }

    #[test]
    fn tally_and_stats() {
        let c = StateCounts::tally(DesktopState::ALL);
        for s in DesktopState::ALL {
            assert_eq!(c.get(s), 1);
        }
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3, 1, 2]), Some(2));
        assert_eq!(quantile(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 0.99), Some(10));
        assert_eq!(quantile(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 0.5), Some(5));
        assert_eq!(quantile(&[7], 0.0), Some(7));
        assert_eq!(quantile(&[7], 1.5), None);
    }
}
