//! Host CPU placement: which host CPUs run the desktops' virtual CPUs and which run
//! everything else (QEMU's device models and I/O, the broker's relay and display proxy).
//!
//! This is the split that VDI and cloud hosts call dedicated vs. shared CPUs (OpenStack's
//! `cpu_dedicated_set` / `cpu_shared_set` with emulator threads on the shared set, libvirt's
//! `vcpupin` / `emulatorpin`): a desktop's vCPU then never waits for a device model or
//! the relay on its own core, and the I/O path never waits for a busy vCPU.
use std::collections::BTreeSet;
use std::fmt;

/// The highest CPU number accepted (the kernel's `cpu_set_t` holds 1024 CPUs).
pub const MAX_CPU: u16 = 1023;

/// A set of host CPUs, written as the kernel writes CPU lists: `0-3,8,10-11`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CpuList(BTreeSet<u16>);

/// Why a CPU list or placement is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CpuError {
    #[error("CPU list {list:?}: {problem} (write it like \"0-3,8\")")]
    Syntax { list: String, problem: String },
    #[error("the {what} CPU list is empty; name at least one CPU")]
    Empty { what: &'static str },
    #[error("desktop CPUs {desktops} and housekeeping CPUs {housekeeping} overlap on {common}; give each CPU to one side only")]
    Overlap {
        desktops: CpuList,
        housekeeping: CpuList,
        common: CpuList,
    },
    #[error("{what} CPUs {asked} include {missing}, which this process may not use (allowed: {allowed}); pick CPUs from the allowed set")]
    NotAllowed {
        what: &'static str,
        asked: CpuList,
        missing: CpuList,
        allowed: CpuList,
    },
    #[error("no CPU is left for housekeeping: all allowed CPUs ({allowed}) are desktop CPUs; leave at least one out or set `housekeeping`")]
    NoneLeft { allowed: CpuList },
}

impl CpuList {
    /// Parses `0-3,8,10-11` (spaces around items are allowed; an empty list is not).
    pub fn parse(s: &str) -> Result<CpuList, CpuError> {
        let bad = |problem: String| CpuError::Syntax {
            list: s.chars().take(64).collect(),
            problem,
        };
        if s.len() > 4096 {
            return Err(bad("longer than 4096 characters".into()));
        }
        let mut set = BTreeSet::new();
        for item in s.split(',') {
            let item = item.trim();
            if item.is_empty() {
                return Err(bad("an item is empty".into()));
            }
            let num = |t: &str| -> Result<u16, CpuError> {
                let t = t.trim();
                if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad(format!("{t:?} is not a CPU number")));
                }
                match t.parse::<u16>() {
                    Ok(n) if n <= MAX_CPU => Ok(n),
                    _ => Err(bad(format!("CPU {t} is above {MAX_CPU}"))),
                }
            };
            match item.split_once('-') {
                Some((a, b)) => {
                    let (a, b) = (num(a)?, num(b)?);
                    if a > b {
                        return Err(bad(format!("range {a}-{b} runs backwards")));
                    }
                    set.extend(a..=b);
                }
                None => {
                    set.insert(num(item)?);
                }
            }
        }
        Ok(CpuList(set))
    }

    /// A list of these CPUs.
    pub fn from_cpus(cpus: impl IntoIterator<Item = u16>) -> CpuList {
        CpuList(cpus.into_iter().filter(|c| *c <= MAX_CPU).collect())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn contains(&self, cpu: u16) -> bool {
        self.0.contains(&cpu)
    }

    pub fn iter(&self) -> impl Iterator<Item = u16> + '_ {
        self.0.iter().copied()
    }

    /// The CPUs in both lists.
    pub fn intersection(&self, other: &CpuList) -> CpuList {
        CpuList(self.0.intersection(&other.0).copied().collect())
    }

    /// The CPUs in `self` but not in `other`.
    pub fn difference(&self, other: &CpuList) -> CpuList {
        CpuList(self.0.difference(&other.0).copied().collect())
    }
}

impl fmt::Display for CpuList {
    /// The kernel's form, ranges collapsed: `0-3,8`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut it = self.0.iter().copied().peekable();
        let mut first = true;
        while let Some(start) = it.next() {
            let mut end = start;
            while it.peek() == Some(&(end + 1)) {
                end += 1;
                it.next();
            }
            if !first {
                f.write_str(",")?;
            }
            first = false;
            if end == start {
                write!(f, "{start}")?;
            } else {
                write!(f, "{start}-{end}")?;
            }
        }
        Ok(())
    }
}

impl serde::Serialize for CpuList {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for CpuList {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<CpuList, D::Error> {
        let s = String::deserialize(d)?;
        CpuList::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Where the pool's threads run: desktop vCPUs on `desktops`; QEMU's other threads
/// and the broker itself on `housekeeping`. The two sets never overlap.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CpuPlacement {
    desktops: CpuList,
    housekeeping: CpuList,
}

impl CpuPlacement {
    /// Checks a placement against the CPUs the broker may use (`allowed`). Without
    /// `housekeeping`, every allowed CPU that is not a desktop CPU is housekeeping.
    pub fn new(
        desktops: CpuList,
        housekeeping: Option<CpuList>,
        allowed: &CpuList,
    ) -> Result<CpuPlacement, CpuError> {
        if desktops.is_empty() {
            return Err(CpuError::Empty { what: "desktop" });
        }
        let check = |what: &'static str, list: &CpuList| {
            let missing = list.difference(allowed);
            if missing.is_empty() {
                Ok(())
            } else {
                Err(CpuError::NotAllowed {
                    what,
                    asked: list.clone(),
                    missing,
                    allowed: allowed.clone(),
                })
            }
        };
        check("desktop", &desktops)?;
        let housekeeping = match housekeeping {
            Some(h) => {
                if h.is_empty() {
                    return Err(CpuError::Empty {
                        what: "housekeeping",
                    });
                }
                check("housekeeping", &h)?;
                let common = desktops.intersection(&h);
                if !common.is_empty() {
                    return Err(CpuError::Overlap {
                        desktops,
                        housekeeping: h,
                        common,
                    });
                }
                h
            }
            None => {
                let rest = allowed.difference(&desktops);
                if rest.is_empty() {
                    return Err(CpuError::NoneLeft {
                        allowed: allowed.clone(),
                    });
                }
                rest
            }
        };
        Ok(CpuPlacement {
            desktops,
            housekeeping,
        })
    }

    /// A placement read back from a state file: checked again (non-empty, disjoint).
    fn checked(desktops: CpuList, housekeeping: CpuList) -> Result<CpuPlacement, CpuError> {
        let all = CpuList(desktops.0.union(&housekeeping.0).copied().collect());
        CpuPlacement::new(desktops, Some(housekeeping), &all)
    }

    /// CPUs for the desktops' vCPU threads.
    pub fn desktops(&self) -> &CpuList {
        &self.desktops
    }

    /// CPUs for everything else: QEMU's device models and I/O, and the broker.
    pub fn housekeeping(&self) -> &CpuList {
        &self.housekeeping
    }
}

impl<'de> serde::Deserialize<'de> for CpuPlacement {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<CpuPlacement, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Raw {
            desktops: CpuList,
            housekeeping: CpuList,
        }
        let r = Raw::deserialize(d)?;
        CpuPlacement::checked(r.desktops, r.housekeeping).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(s: &str) -> CpuList {
        CpuList::parse(s).unwrap()
    }

    #[test]
    fn parses_and_prints_kernel_cpu_lists() {
        for (input, printed) in [
            ("0", "0"),
            ("0-3", "0-3"),
            ("0-3,8,10-11", "0-3,8,10-11"),
            (" 3 , 1-2 ", "1-3"),
            ("5,4,4", "4-5"),
            ("1023", "1023"),
        ] {
            assert_eq!(l(input).to_string(), printed, "{input}");
        }
        assert_eq!(l("0-3,8").len(), 5);
        assert!(l("2").contains(2));
    }

    #[test]
    fn rejects_malformed_lists() {
        for bad in [
            "",
            ",",
            "0,",
            "a",
            "-1",
            "1-",
            "3-1",
            "1024",
            "0-1024",
            "1.5",
            "0x1",
            "1 2",
            "99999999999",
        ] {
            let e = CpuList::parse(bad).unwrap_err();
            assert!(matches!(e, CpuError::Syntax { .. }), "{bad:?}: {e}");
            assert!(e.to_string().contains("write it like"), "{e}");
        }
        assert!(CpuList::parse(&"1,".repeat(3000)).is_err());
    }

    #[test]
    fn placement_round_trips_through_json_and_is_checked_on_the_way_back() {
        let p = CpuPlacement::new(l("2-5,7"), Some(l("0-1")), &l("0-7")).unwrap();
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(json, r#"{"desktops":"2-5,7","housekeeping":"0-1"}"#);
        assert_eq!(serde_json::from_str::<CpuPlacement>(&json).unwrap(), p);
        for bad in [
            r#"{"desktops":"0-2","housekeeping":"2"}"#,
            r#"{"desktops":"x","housekeeping":"2"}"#,
            r#"{"desktops":"1"}"#,
            r#"{"desktops":"1","housekeeping":"2","extra":1}"#,
        ] {
            assert!(serde_json::from_str::<CpuPlacement>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn placement_defaults_housekeeping_to_the_rest() {
        let p = CpuPlacement::new(l("1-3"), None, &l("0-3")).unwrap();
        assert_eq!(p.desktops().to_string(), "1-3");
        assert_eq!(p.housekeeping().to_string(), "0");
        let p = CpuPlacement::new(l("0"), Some(l("1")), &l("0-3")).unwrap();
        assert_eq!(p.housekeeping().to_string(), "1");
    }

    #[test]
    fn placement_errors_say_what_to_change() {
        let allowed = l("0-1");
        let e = CpuPlacement::new(l("0-1"), Some(l("1")), &allowed).unwrap_err();
        assert!(matches!(e, CpuError::Overlap { ref common, .. } if common.to_string() == "1"));
        let e = CpuPlacement::new(l("0-1"), None, &allowed).unwrap_err();
        assert!(matches!(e, CpuError::NoneLeft { .. }), "{e}");
        let e = CpuPlacement::new(l("0,5"), None, &allowed).unwrap_err();
        assert!(
            matches!(e, CpuError::NotAllowed { what: "desktop", ref missing, .. } if missing.to_string() == "5"),
            "{e}"
        );
        let e = CpuPlacement::new(l("0"), Some(l("2")), &allowed).unwrap_err();
        assert!(
            matches!(
                e,
                CpuError::NotAllowed {
                    what: "housekeeping",
                    ..
                }
            ),
            "{e}"
        );
        let e = CpuPlacement::checked(l("0-1"), l("1-2")).unwrap_err();
        assert!(matches!(e, CpuError::Overlap { .. }), "{e}");
        let e = CpuPlacement::new(CpuList::default(), None, &allowed).unwrap_err();
        assert_eq!(e, CpuError::Empty { what: "desktop" });
        let e = CpuPlacement::new(l("0"), Some(CpuList::default()), &allowed).unwrap_err();
        assert_eq!(
            e,
            CpuError::Empty {
                what: "housekeeping"
            }
        );
    }
}
