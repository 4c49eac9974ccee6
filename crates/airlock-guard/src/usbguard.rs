//! USBGuard, when a terminal has it. Its `block` de-authorizes a device, which also stops
//! usbfs claims (`usb_driver_claim_interface` refuses an unauthorized interface), so the
//! forwarder could not take a blocked drive: the guard keeps the drive *authorized* and
//! uses USBGuard only as an allow-list, blocking devices that combine mass storage with a
//! keyboard or a network interface (a "BadUSB" disguise).
//!
//! This module reads the daemon's configuration and rules and evaluates the part of the
//! rule language that decides a drive's fate (`id` and `with-interface` with its
//! operators); a rule with other conditions is reported as one it cannot judge.
use crate::root::Root;

/// The snippet `airlock guard install --usbguard` writes (after the marker line).
pub const SNIPPET_RULES: [&str; 4] = [
    "block with-interface all-of { 08:*:* 03:*:* }",
    "block with-interface all-of { 08:*:* 02:*:* }",
    "block with-interface all-of { 08:*:* 0a:*:* }",
    "block with-interface all-of { 08:*:* e0:*:* }",
];

/// Where the snippet goes.
pub const SNIPPET_PATH: &str = "/etc/usbguard/rules.d/70-airlock-guard.conf";

/// A rule's target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Allow,
    Block,
    Reject,
}

/// An interface type pattern `cc:ss:pp` (`None` = `*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InterfacePattern([Option<u8>; 3]);

impl InterfacePattern {
    fn parse(s: &str) -> Option<InterfacePattern> {
        let parts: Vec<&str> = s.split(':').collect();
        let [c, sc, p] = parts.as_slice() else {
            return None;
        };
        let one = |x: &str| -> Option<Option<u8>> {
            if x == "*" {
                Some(None)
            } else {
                u8::from_str_radix(x, 16).ok().map(Some)
            }
        };
        Some(InterfacePattern([one(c)?, one(sc)?, one(p)?]))
    }

    fn matches(&self, iface: [u8; 3]) -> bool {
        self.0
            .iter()
            .zip(iface)
            .all(|(p, v)| p.is_none_or(|p| p == v))
    }
}

/// `with-interface`'s set operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SetOp {
    AllOf,
    OneOf,
    NoneOf,
    Equals,
    EqualsOrdered,
    MatchAll,
}

/// A parsed rule, as far as this module understands it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub target: Target,
    /// `id VID:PID` (each side `None` = `*`).
    id: Option<(Option<u16>, Option<u16>)>,
    interfaces: Option<(SetOp, Vec<InterfacePattern>)>,
    /// Conditions this module cannot evaluate (`serial`, `via-port`, …).
    pub unknown: Vec<String>,
    /// The rule as written.
    pub text: String,
}

/// What a device looks like to the rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceView {
    pub vid: Option<u16>,
    pub pid: Option<u16>,
    /// Interface types (class, subclass, protocol).
    pub interfaces: Vec<[u8; 3]>,
}

/// Whether a rule matches a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Match {
    Yes,
    No,
    /// It depends on conditions this module does not evaluate.
    Maybe,
}

/// Splits a rule into words, keeping quoted strings and `{ … }` groups as words.
fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = line.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '"' {
            chars.next();
            let mut w = String::from("\"");
            while let Some(c) = chars.next() {
                w.push(c);
                if c == '\\' {
                    if let Some(n) = chars.next() {
                        w.push(n);
                    }
                } else if c == '"' {
                    break;
                }
            }
            out.push(w);
        } else if c == '{' {
            let mut w = String::new();
            for c in chars.by_ref() {
                w.push(c);
                if c == '}' {
                    break;
                }
            }
            out.push(w);
        } else {
            let mut w = String::new();
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                w.push(c);
                chars.next();
            }
            out.push(w);
        }
    }
    out
}

impl Rule {
    /// Parses one rule line; `None` for a line that is not a rule of the language.
    pub fn parse(line: &str) -> Option<Rule> {
        let w = words(line.trim());
        let target = match w.first()?.as_str() {
            "allow" => Target::Allow,
            "block" => Target::Block,
            "reject" => Target::Reject,
            _ => return None,
        };
        let mut rule = Rule {
            target,
            id: None,
            interfaces: None,
            unknown: Vec::new(),
            text: line.trim().to_owned(),
        };
        let mut i = 1;
        while i < w.len() {
            let attr = w[i].as_str();
            // An optional set operator, then a value or a { } group.
            let (op, value) = match w.get(i + 1).map(String::as_str) {
                Some(
                    o @ ("all-of" | "one-of" | "none-of" | "equals" | "equals-ordered"
                    | "match-all"),
                ) => (Some(o), w.get(i + 2)),
                _ => (None, w.get(i + 1)),
            };
            let value = value?.as_str();
            i += if op.is_some() { 3 } else { 2 };
            match attr {
                "id" if op.is_none() && !value.starts_with('{') => {
                    let (v, p) = value.split_once(':')?;
                    let side = |x: &str| {
                        if x == "*" {
                            Some(None)
                        } else {
                            u16::from_str_radix(x, 16).ok().map(Some)
                        }
                    };
                    rule.id = Some((side(v)?, side(p)?));
                }
                "with-interface" => {
                    let items: Vec<&str> = if value.starts_with('{') {
                        value
                            .trim_start_matches('{')
                            .trim_end_matches('}')
                            .split_whitespace()
                            .collect()
                    } else {
                        vec![value]
                    };
                    let set: Option<Vec<InterfacePattern>> =
                        items.iter().map(|s| InterfacePattern::parse(s)).collect();
                    let op = match op {
                        Some("all-of") => SetOp::AllOf,
                        Some("one-of") => SetOp::OneOf,
                        Some("none-of") => SetOp::NoneOf,
                        Some("equals-ordered") => SetOp::EqualsOrdered,
                        Some("match-all") => SetOp::MatchAll,
                        _ => SetOp::Equals,
                    };
                    rule.interfaces = Some((op, set?));
                }
                // A label does not take part in matching.
                "label" => {}
                other => rule.unknown.push(other.to_owned()),
            }
        }
        Some(rule)
    }

    /// Whether this rule matches `d`: `No` when any condition fails, else `Maybe` when
    /// one cannot be evaluated.
    pub fn matches(&self, d: &DeviceView) -> Match {
        let mut unsure = !self.unknown.is_empty();
        if let Some((v, p)) = self.id {
            for (want, have) in [(v, d.vid), (p, d.pid)] {
                match (want, have) {
                    (Some(w), Some(h)) if w != h => return Match::No,
                    (Some(_), None) => unsure = true,
                    _ => {}
                }
            }
        }
        if let Some((op, set)) = &self.interfaces {
            let hit = |p: &InterfacePattern| d.interfaces.iter().any(|i| p.matches(*i));
            let covered = |i: &[u8; 3]| set.iter().any(|p| p.matches(*i));
            let ok = match op {
                SetOp::AllOf => set.iter().all(hit),
                SetOp::OneOf => set.iter().any(hit),
                SetOp::NoneOf => !set.iter().any(hit),
                SetOp::MatchAll => d.interfaces.iter().all(covered),
                SetOp::Equals => set.iter().all(hit) && d.interfaces.iter().all(covered),
                SetOp::EqualsOrdered => {
                    set.len() == d.interfaces.len()
                        && set.iter().zip(&d.interfaces).all(|(p, i)| p.matches(*i))
                }
            };
            if !ok {
                return Match::No;
            }
        }
        if unsure {
            Match::Maybe
        } else {
            Match::Yes
        }
    }
}

/// The daemon's policy: its rules in order and the target when none matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub rules: Vec<Rule>,
    pub implicit: Target,
    /// Lines that are not rules this module can read (file:line: text).
    pub unreadable: Vec<String>,
}

/// What the policy does to a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The first rule that matches, or `None` for the implicit target.
    Decided {
        target: Target,
        rule: Option<String>,
    },
    /// A rule before any decision may match: its conditions are not evaluated here.
    Unsure { rule: String },
}

impl Policy {
    /// Parses the daemon's configuration text and rule files `(path, text)` in order.
    pub fn parse(daemon_conf: &str, rule_files: &[(String, String)]) -> Policy {
        let implicit = conf_value(daemon_conf, "ImplicitPolicyTarget")
            .map(|v| match v.as_str() {
                "allow" => Target::Allow,
                "reject" => Target::Reject,
                _ => Target::Block,
            })
            .unwrap_or(Target::Block);
        let mut rules = Vec::new();
        let mut unreadable = Vec::new();
        for (path, text) in rule_files {
            for (n, line) in text.lines().enumerate() {
                let t = line.trim();
                if t.is_empty() || t.starts_with('#') {
                    continue;
                }
                match Rule::parse(t) {
                    Some(r) => rules.push(r),
                    None => unreadable.push(format!("{path}:{}: {t}", n + 1)),
                }
            }
        }
        Policy {
            rules,
            implicit,
            unreadable,
        }
    }

    /// Reads the daemon's configuration and rules from `root`; `None` when USBGuard is not
    /// installed there.
    pub fn read(root: &Root) -> Option<Policy> {
        let conf = root.read("/etc/usbguard/usbguard-daemon.conf")?;
        let rule_file = conf_value(&conf, "RuleFile").unwrap_or("/etc/usbguard/rules.conf".into());
        let folder = conf_value(&conf, "RuleFolder").unwrap_or("/etc/usbguard/rules.d".into());
        let mut files: Vec<(String, String)> = root
            .read(&rule_file)
            .map(|t| (rule_file.clone(), t))
            .into_iter()
            .collect();
        files.extend(root.config_files(&[folder.trim_end_matches('/')], "conf"));
        Some(Policy::parse(&conf, &files))
    }

    /// What the policy does to `d`.
    pub fn verdict(&self, d: &DeviceView) -> Verdict {
        for r in &self.rules {
            match r.matches(d) {
                Match::Yes => {
                    return Verdict::Decided {
                        target: r.target,
                        rule: Some(r.text.clone()),
                    }
                }
                Match::Maybe => {
                    return Verdict::Unsure {
                        rule: r.text.clone(),
                    }
                }
                Match::No => {}
            }
        }
        Verdict::Decided {
            target: self.implicit,
            rule: None,
        }
    }
}

/// `Key=Value` of the daemon's configuration.
fn conf_value(conf: &str, key: &str) -> Option<String> {
    conf.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .find_map(|l| l.trim().strip_prefix(key)?.trim_start().strip_prefix('='))
        .map(|v| v.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drive() -> DeviceView {
        DeviceView {
            vid: Some(0x0411),
            pid: Some(0x01f0),
            interfaces: vec![[8, 6, 0x50]],
        }
    }

    fn combo() -> DeviceView {
        DeviceView {
            vid: None,
            pid: None,
            interfaces: vec![[8, 6, 0x50], [3, 1, 1]],
        }
    }

    fn policy(rules: &str) -> Policy {
        Policy::parse(
            "ImplicitPolicyTarget=block\n",
            &[("rules.conf".into(), rules.into())],
        )
    }

    #[test]
    fn the_snippet_blocks_combos_and_leaves_the_drive_to_the_site() {
        let p = policy(&format!(
            "{}\nallow with-interface equals {{ 08:*:* }}\n",
            SNIPPET_RULES.join("\n")
        ));
        assert!(matches!(
            p.verdict(&combo()),
            Verdict::Decided {
                target: Target::Block,
                rule: Some(_)
            }
        ));
        assert!(matches!(
            p.verdict(&drive()),
            Verdict::Decided {
                target: Target::Allow,
                ..
            }
        ));
        // Without an allow rule the implicit target blocks the drive too.
        let p = policy(&SNIPPET_RULES.join("\n"));
        assert_eq!(
            p.verdict(&drive()),
            Verdict::Decided {
                target: Target::Block,
                rule: None
            }
        );
    }

    #[test]
    fn operators() {
        let d = combo();
        let m = |r: &str| Rule::parse(r).unwrap().matches(&d);
        assert_eq!(
            m("allow with-interface one-of { 03:*:* 09:00:00 }"),
            Match::Yes
        );
        assert_eq!(
            m("allow with-interface all-of { 03:*:* 09:00:00 }"),
            Match::No
        );
        assert_eq!(m("allow with-interface none-of { 09:*:* }"), Match::Yes);
        assert_eq!(
            m("allow with-interface match-all { 08:*:* 03:01:* }"),
            Match::Yes
        );
        assert_eq!(m("allow with-interface match-all { 08:*:* }"), Match::No);
        assert_eq!(
            m("allow with-interface equals { 03:*:* 08:06:50 }"),
            Match::Yes
        );
        assert_eq!(
            m("allow with-interface equals-ordered { 03:*:* 08:06:50 }"),
            Match::No
        );
        assert_eq!(
            m("allow with-interface equals-ordered { 08:06:50 03:*:* }"),
            Match::Yes
        );
        assert_eq!(
            m("allow with-interface 08:06:50"),
            Match::No,
            "one value: equals"
        );
        assert_eq!(
            m("allow id 0411:* label \"drive\""),
            Match::Maybe,
            "the id is unknown"
        );
        assert_eq!(
            Rule::parse("allow id 0411:*").unwrap().matches(&drive()),
            Match::Yes
        );
        assert_eq!(
            Rule::parse("allow id 0411:0002").unwrap().matches(&drive()),
            Match::No
        );
        assert_eq!(
            m("allow serial \"X\" with-interface one-of { 08:*:* }"),
            Match::Maybe
        );
        assert!(Rule::parse("permit everything").is_none());
        assert!(Rule::parse("allow id zz:1").is_none());
        assert!(Rule::parse("allow with-interface { 08:*").is_none());
    }

    #[test]
    fn an_earlier_allow_all_defeats_the_snippet() {
        let p = policy(&format!("allow\n{}", SNIPPET_RULES.join("\n")));
        assert!(matches!(
            p.verdict(&combo()),
            Verdict::Decided {
                target: Target::Allow,
                ..
            }
        ));
    }

    #[test]
    fn reads_the_daemon_configuration_and_rule_folder() {
        let t = tempfile::tempdir().unwrap();
        let root = Root::new(t.path());
        assert!(Policy::read(&root).is_none(), "not installed");
        std::fs::create_dir_all(t.path().join("etc/usbguard/rules.d")).unwrap();
        std::fs::write(
            t.path().join("etc/usbguard/usbguard-daemon.conf"),
            "# c\nRuleFile=/etc/usbguard/rules.conf\nRuleFolder=/etc/usbguard/rules.d/\nImplicitPolicyTarget=allow\n",
        )
        .unwrap();
        std::fs::write(
            t.path().join("etc/usbguard/rules.conf"),
            "allow id 0411:01f0 with-interface equals { 08:06:50 }\nnonsense\n",
        )
        .unwrap();
        std::fs::write(
            t.path().join("etc/usbguard/rules.d/70-x.conf"),
            "reject with-interface one-of { 03:*:* }\n",
        )
        .unwrap();
        let p = Policy::read(&root).unwrap();
        assert_eq!(p.implicit, Target::Allow);
        assert_eq!(p.rules.len(), 2);
        assert_eq!(p.unreadable, ["/etc/usbguard/rules.conf:2: nonsense"]);
        assert!(matches!(
            p.verdict(&combo()),
            Verdict::Decided {
                target: Target::Reject,
                ..
            }
        ));
        // An allow by id alone would let a device claiming that id through, whatever it
        // is: the combo's fate is then unsure.
        let p = policy("allow id 0411:01f0\nblock with-interface all-of { 08:*:* 03:*:* }");
        assert!(matches!(p.verdict(&combo()), Verdict::Unsure { .. }));
    }
}
