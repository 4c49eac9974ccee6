use super::*;

fn base() -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    for f in ["golden.qcow2", "vmlinuz", "initrd.img"] {
        std::fs::write(d.path().join(f), b"x").unwrap();
    }
    let p = d.path().to_owned();
    (d, p)
}

fn good() -> String {
    format!(
        r#"
[server]
state_dir = "state"
[admin]
token_sha256 = "{admin}"
[[terminals]]
name = "t1"
token_sha256 = "{t1}"
[pool]
size = 2
accel = "tcg"
memory_mib = 256
[pool.guest]
disk = "golden.qcow2"
kernel = "vmlinuz"
initrd = "initrd.img"
append = "console=ttyS0"
[pool.display]
port_base = 5930
"#,
        admin = hash_token("a"),
        t1 = hash_token("t")
    )
}

fn err(text: &str) -> String {
    let (_d, b) = base();
    Config::parse(text, "test.toml", &b, None)
        .unwrap_err()
        .to_string()
}

#[test]
fn good_config() {
    let (_d, b) = base();
    let c = Config::parse(&good(), "test.toml", &b, None).unwrap();
    assert_eq!(c.listen.to_string(), "127.0.0.1:7480");
    assert_eq!(c.pool.desktops.len(), 2);
    assert_eq!(c.pool.desktops[1].as_str(), "desk-02");
    assert_eq!(c.pool.state_dir, b.join("state"));
    assert_eq!(c.pool.reset_method, ResetMethod::TemplateClone);
    assert_eq!(c.pool.driver.qemu, PathBuf::from("qemu-system-x86_64"));
    let o = Config::parse(&good(), "t", &b, Some(Path::new("/x"))).unwrap();
    assert_eq!(o.pool.state_dir, PathBuf::from("/x"));
}

#[test]
fn cpu_placement() {
    let (_d, b) = base();
    let c = Config::parse(&good(), "t", &b, None).unwrap();
    assert!(c.pool.driver.placement.is_none(), "unpinned by default");
    let allowed = airlock_qemu::affinity::allowed_cpus().unwrap();
    let first = allowed.iter().next().unwrap();
    let with = |section: &str| format!("{}\n[pool.cpus]\n{section}\n", good());
    if allowed.len() >= 2 {
        let c = Config::parse(&with(&format!("desktops = \"{first}\"")), "t", &b, None).unwrap();
        let p = c.pool.driver.placement.unwrap();
        assert_eq!(p.desktops().to_string(), first.to_string());
        assert_eq!(p.housekeeping(), &allowed.difference(p.desktops()));
    }
    for (section, key, says) in [
        ("desktops = \"x\"", "pool.cpus.desktops", "not a CPU number"),
        ("desktops = \"1000\"", "pool.cpus.desktops", "may not use"),
        (
            "desktops = \"0\"\nhousekeeping = \"0\"",
            "pool.cpus.housekeeping",
            "overlap",
        ),
        (
            "desktops = \"0\"\nhousekeeping = \"1-\"",
            "pool.cpus.housekeeping",
            "not a CPU number",
        ),
        ("housekeeping = \"0\"", "desktops", "missing field"),
    ] {
        let e = err(&with(section));
        assert!(e.contains(key) && e.contains(says), "{section}: {e}");
    }
    let every = allowed.to_string();
    let e = err(&with(&format!("desktops = \"{every}\"")));
    assert!(e.contains("no CPU is left for housekeeping"), "{e}");
}

#[test]
fn unknown_keys_are_named() {
    let e = err(&good().replace("size = 2", "size = 2\nsizee = 3"));
    assert!(e.contains("sizee"), "{e}");
    let e = err(&format!("{}\n[bogus]\nx=1", good()));
    assert!(e.contains("bogus"), "{e}");
}

#[test]
fn bad_values_name_key_and_fix() {
    let cases = [
        ("accel = \"tcg\"", "accel = \"xen\"", "pool.accel"),
        ("size = 2", "size = 0", "pool.size"),
        ("size = 2", "size = \"two\"", "size"),
        ("memory_mib = 256", "memory_mib = 1", "pool.memory_mib"),
        (
            "port_base = 5930",
            "port_base = 65535",
            "pool.display.port_base",
        ),
        (
            "disk = \"golden.qcow2\"",
            "disk = \"missing.qcow2\"",
            "pool.guest.disk",
        ),
        ("kernel = \"vmlinuz\"\n", "", "pool.guest.kernel"),
        (
            "state_dir = \"state\"",
            "state_dir = \"state\"\nlisten = \"nowhere\"",
            "server.listen",
        ),
    ];
    for (from, to, key) in cases {
        let text = good().replacen(from, to, 1);
        assert_ne!(text, good(), "{from}");
        let e = err(&text);
        assert!(e.contains(key), "{key}: {e}");
    }
    let e = err(&good().replace(&hash_token("t"), "zz"));
    assert!(
        e.contains("terminals.token_sha256") && e.contains("hash-token"),
        "{e}"
    );
    let e = err(&good().replace("[pool]", "[pool]\nreset = \"magic\""));
    assert!(e.contains("template_clone"), "{e}");
}

#[test]
fn the_waiting_line_has_defaults_and_checked_bounds() {
    let (_d, b) = base();
    let c = Config::parse(&good(), "t", &b, None).unwrap();
    assert_eq!(c.pool.queue, QueueConfig::default());
    let with = |section: &str| format!("{}\n[pool.queue]\n{section}\n", good());
    let c = Config::parse(&with("poll_interval_s = 5\nhold_s = 30"), "t", &b, None).unwrap();
    assert_eq!(
        (c.pool.queue.hold, c.pool.queue.ticket_timeout),
        (Duration::from_secs(30), Duration::from_secs(15)),
        "the ticket timeout follows the poll interval"
    );
    for (section, key, fix) in [
        ("hold_s = 0", "pool.queue.hold_s", "1 to 300"),
        (
            "poll_interval_s = 61",
            "pool.queue.poll_interval_s",
            "1 to 60",
        ),
        (
            "ticket_timeout_s = 3",
            "pool.queue.ticket_timeout_s",
            "use 4 to 600",
        ),
        ("wait_s = 3", "wait_s", "unknown field"),
    ] {
        let e = err(&with(section));
        assert!(e.contains(key) && e.contains(fix), "{section}: {e}");
    }
}

#[test]
fn long_state_dirs_are_refused_before_sockets_break() {
    let (_d, b) = base();
    let long = format!("/{}", "s".repeat(80));
    let e = Config::parse(&good(), "t", &b, Some(Path::new(&long)))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("server.state_dir") && e.contains("107-byte"),
        "{e}"
    );
    assert!(Config::parse(&good(), "t", &b, Some(Path::new("/var/lib/airlock"))).is_ok());
}

#[test]
fn tls_needs_both_files() {
    let e = err(&good().replace(
        "state_dir = \"state\"",
        "state_dir = \"state\"\ntls_cert = \"c.pem\"",
    ));
    assert!(e.contains("server.tls_key"), "{e}");
}

#[test]
fn display_crosses_the_network_only_over_tls_unless_allowed() {
    let (_d, b) = base();
    for f in ["c.pem", "k.pem"] {
        std::fs::write(b.join(f), b"x").unwrap();
    }
    let display =
        |keys: &str| good().replace("port_base = 5930", &format!("port_base = 5930\n{keys}"));
    let with_tls = |text: String| {
        text.replace(
            "state_dir = \"state\"",
            "state_dir = \"state\"\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"",
        )
    };
    let parse = |text: &str| Config::parse(text, "t", &b, None);
    // Loopback without TLS: plaintext, nothing to warn about; 30 s grace by default.
    let d = parse(&good()).unwrap().pool.display.unwrap();
    assert!(d.tls.is_none() && !d.plaintext_on_network());
    assert_eq!(d.grace, Duration::from_secs(30));
    // A network address without TLS needs the explicit flag.
    let e = err(&display("listen = \"0.0.0.0\""));
    assert!(
        e.contains("pool.display.listen") && e.contains("allow_plaintext = true"),
        "{e}"
    );
    let d = parse(&display("listen = \"0.0.0.0\"\nallow_plaintext = true"))
        .unwrap()
        .pool
        .display
        .unwrap();
    assert!(d.plaintext_on_network());
    // With TLS the display uses the server's certificate, and nothing else.
    let d = parse(&with_tls(display(
        "listen = \"0.0.0.0\"\nhost_subject = \"O=Airlock,CN=h\"\ngrace_s = 5",
    )))
    .unwrap()
    .pool
    .display
    .unwrap();
    let tls = d.tls.unwrap();
    assert_eq!((tls.cert, tls.key), (b.join("c.pem"), b.join("k.pem")));
    assert_eq!(tls.host_subject.as_deref(), Some("O=Airlock,CN=h"));
    assert_eq!(d.grace, Duration::from_secs(5));
    for (keys, key, says) in [
        (
            "allow_plaintext = true",
            "pool.display.allow_plaintext",
            "remove it",
        ),
        ("protocol = \"vnc\"", "pool.display.protocol", "VeNCrypt"),
        (
            "host_subject = \"O=A\\nCN=b\"",
            "pool.display.host_subject",
            "not a certificate subject",
        ),
        ("grace_s = 0", "pool.display.grace_s", "1 to 3600"),
    ] {
        let e = parse(&with_tls(display(keys))).unwrap_err().to_string();
        assert!(e.contains(key) && e.contains(says), "{keys}: {e}");
    }
    let e = err(&display("host_subject = \"O=A\""));
    assert!(
        e.contains("pool.display.host_subject") && e.contains("no TLS"),
        "{e}"
    );
}

#[test]
fn paths_are_normalized() {
    assert_eq!(
        normalize(Path::new("/a/b/../c/./d")),
        PathBuf::from("/a/c/d")
    );
    assert_eq!(
        resolve(Path::new("/etc/airlock"), Path::new("../x")),
        PathBuf::from("/etc/x")
    );
    assert_eq!(
        resolve(Path::new("/etc"), Path::new("/abs/y")),
        PathBuf::from("/abs/y")
    );
}

#[test]
fn limits_and_anchoring_have_defaults_and_checked_bounds() {
    let (_d, b) = base();
    let c = Config::parse(&good(), "t", &b, None).unwrap();
    assert_eq!(c.pool.leases_per_terminal, 1);
    assert_eq!(c.limits.acquire, Limit::new(10, 30).unwrap());
    assert_eq!(c.limits.auth_failure, Limit::new(10, 10).unwrap());
    let d = c.pool.display.unwrap();
    assert_eq!(
        (d.max_connections, d.idle_timeout),
        (16, Duration::from_secs(3600))
    );
    assert_eq!(c.audit.file, PathBuf::from(DEFAULT_ANCHOR_FILE));
    assert_eq!(c.audit.interval, Duration::from_secs(60));
    assert!(!c.audit.syslog);

    let with = |section: &str| format!("{}\n{section}\n", good());
    let c = Config::parse(
        &with(
            "[limits]\nleases_per_terminal = 2\nacquire_burst = 3\nacquires_per_minute = 4\n\
               [audit]\nanchor_file = \"anchors/a.log\"\nanchor_interval_s = 5\nsyslog = true",
        ),
        "t",
        &b,
        None,
    )
    .unwrap();
    assert_eq!(c.pool.leases_per_terminal, 2);
    assert_eq!(c.limits.acquire, Limit::new(3, 4).unwrap());
    assert_eq!(c.audit.file, b.join("anchors/a.log"));
    assert_eq!(c.audit.interval, Duration::from_secs(5));
    assert!(c.audit.syslog);
    for (section, key, says) in [
        (
            "[limits]\nleases_per_terminal = 0",
            "limits.leases_per_terminal",
            "1 to 500",
        ),
        (
            "[limits]\nacquire_burst = 0",
            "limits.acquire_burst",
            "1 to 10000",
        ),
        (
            "[limits]\nauth_failures_per_minute = 0",
            "limits.auth_failures_per_minute",
            "1 to 600000",
        ),
        ("[limits]\nper_ip = 3", "per_ip", "unknown field"),
        (
            "[audit]\nanchor_interval_s = 0",
            "audit.anchor_interval_s",
            "1 to 86400",
        ),
        (
            "[audit]\nanchor_file = \"state/anchor.log\"",
            "audit.anchor_file",
            "inside the state directory",
        ),
        (
            "[audit]\nanchor_file = \"\"",
            "audit.anchor_file",
            "not a file path",
        ),
    ] {
        let e = err(&with(section));
        assert!(e.contains(key) && e.contains(says), "{section}: {e}");
    }
    let display =
        |keys: &str| good().replace("port_base = 5930", &format!("port_base = 5930\n{keys}"));
    for (keys, key, says) in [
        (
            "max_connections = 0",
            "pool.display.max_connections",
            "1 to 256",
        ),
        (
            "idle_timeout_s = 4",
            "pool.display.idle_timeout_s",
            "5 to 86400",
        ),
    ] {
        let e = err(&display(keys));
        assert!(e.contains(key) && e.contains(says), "{keys}: {e}");
    }
}

#[test]
fn hashes() {
    assert_eq!(
        hash_token("demo-terminal"),
        hex::encode(Sha256::digest(b"demo-terminal"))
    );
}

#[test]
fn metrics_token_as_hash_or_file() {
    let (_d, b) = base();
    let c = Config::parse(&good(), "t", &b, None).unwrap();
    assert!(c.metrics_token_sha256.is_none(), "open by default");
    let with = |section: &str| format!("{}\n[metrics]\n{section}\n", good());
    let c = Config::parse(
        &with(&format!("token_sha256 = \"{}\"", hash_token("scrape-me"))),
        "t",
        &b,
        None,
    )
    .unwrap();
    assert_eq!(
        c.metrics_token_sha256,
        Some(<[u8; 32]>::from(Sha256::digest(b"scrape-me")))
    );
    // A file with the token (and a newline), relative to the config.
    std::fs::write(b.join("metrics.token"), "0123456789abcdef0123\n").unwrap();
    let c = Config::parse(&with("token_file = \"metrics.token\""), "t", &b, None).unwrap();
    assert_eq!(
        c.metrics_token_sha256,
        Some(<[u8; 32]>::from(Sha256::digest(b"0123456789abcdef0123")))
    );
    std::fs::write(b.join("short.token"), "short\n").unwrap();
    for (section, key, says) in [
        ("token_sha256 = \"abc\"", "metrics.token_sha256", "hex"),
        (
            "token_file = \"short.token\"",
            "metrics.token_file",
            "16 to 4096",
        ),
        (
            "token_file = \"missing.token\"",
            "metrics.token_file",
            "missing.token",
        ),
        (
            "token_file = \"metrics.token\"\ntoken_sha256 = \"00\"",
            "metrics.token_file",
            "keep one",
        ),
        ("token = \"plain\"", "token", "unknown field"),
    ] {
        let e = Config::parse(&with(section), "t", &b, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains(key) && e.contains(says), "{section}: {e}");
    }
}

#[test]
fn console_accounts_and_settings_are_checked() {
    let (_d, b) = base();
    let c = Config::parse(&good(), "test.toml", &b, None).unwrap();
    assert_eq!(c.console.session_ttl, Duration::from_secs(8 * 3600));
    assert_eq!(c.console.min_clean, 1);
    assert_eq!(c.console.credentials.names().count(), 0);
    let hash = airlock_console::login::hash_password("a long password").unwrap();
    let with = |extra: &str| format!("{}\n[console]\n{extra}\n", good());
    let c = Config::parse(
        &with(&format!(
            "min_clean = 2\nsession_minutes = 60\n[[console.accounts]]\nname = \"it-admin\"\npassword_hash = \"{hash}\""
        )),
        "test.toml",
        &b,
        None,
    )
    .unwrap();
    assert_eq!(
        c.console.credentials.names().collect::<Vec<_>>(),
        ["it-admin"]
    );
    assert!(c.console.credentials.check("it-admin", "a long password"));
    assert!(c.console.credentials.check("token", "a"));
    for (extra, key) in [
        (
            "[[console.accounts]]\nname = \"x\"\npassword_hash = \"secret\"",
            "console.accounts",
        ),
        (
            &*format!("[[console.accounts]]\nname = \"token\"\npassword_hash = \"{hash}\""),
            "console.accounts",
        ),
        ("session_minutes = 1", "console.session_minutes"),
        ("min_clean = 3", "console.min_clean"),
    ] {
        let e = err(&with(extra));
        assert!(e.contains(key), "{extra}: {e}");
    }
}

#[test]
fn cpu_model_is_one_the_host_qemu_knows() {
    let (_d, b) = base();
    let c = Config::parse(&good(), "t", &b, None).unwrap();
    assert_eq!(c.pool.driver.cpu, None, "QEMU's default model by default");
    let with = |keys: &str| good().replace("[pool]\n", &format!("[pool]\n{keys}\n"));
    let c = Config::parse(&with("cpu_model = \"Skylake-Client-v4\""), "t", &b, None).unwrap();
    assert_eq!(
        c.pool.driver.cpu,
        Some(airlock_qemu::CpuShape {
            model: "Skylake-Client-v4".into(),
            hyperv: false
        })
    );
    let e = err(&with("cpu_model = \"no-such-cpu\""));
    assert!(
        e.contains("pool.cpu_model")
            && e.contains("no-such-cpu")
            && e.contains("Broadwell")
            && e.contains("Haswell")
            && e.contains("-cpu help"),
        "{e}"
    );
    let e = err(&with("cpu_model = \"qemu64,+vmx\""));
    assert!(
        e.contains("pool.cpu_model") && e.contains("not a CPU model name"),
        "{e}"
    );
}

#[test]
fn hyperv_needs_kvm_and_a_named_model() {
    let with = |keys: &str| good().replace("[pool]\n", &format!("[pool]\n{keys}\n"));
    let e = err(&with("hyperv = true\ncpu_model = \"Skylake-Client-v4\""));
    assert!(
        e.contains("pool.hyperv") && e.contains("KVM") && e.contains("tcg"),
        "{e}"
    );
    if Path::new("/dev/kvm").exists() {
        let kvm = |keys: &str| with(keys).replace("accel = \"tcg\"", "accel = \"kvm\"");
        let e = err(&kvm("hyperv = true"));
        assert!(e.contains("pool.hyperv") && e.contains("cpu_model"), "{e}");
        let (_d, b) = base();
        let c = Config::parse(
            &kvm("hyperv = true\ncpu_model = \"Skylake-Client-v4\""),
            "t",
            &b,
            None,
        )
        .unwrap();
        assert!(c.pool.driver.cpu.unwrap().hyperv);
    }
}

#[test]
fn no_key_asks_for_a_spice_agent_webdav_or_usb_channel() {
    // There is no such key: each is an unknown key, refused with its name.
    for (section, key) in [
        ("[pool]", "vdagent = true"),
        ("[pool]", "spice_agent = true"),
        ("[pool]", "usb_channels = 2"),
        ("[pool.display]", "vdagent = true"),
        ("[pool.display]", "clipboard = true"),
        ("[pool.display]", "copy_paste = true"),
        ("[pool.display]", "file_transfer = true"),
        ("[pool.display]", "webdav = true"),
        ("[pool.display]", "usbredir = true"),
        ("[pool.display]", "spice_usb_channels = 4"),
    ] {
        let text = good().replacen(&format!("{section}\n"), &format!("{section}\n{key}\n"), 1);
        assert_ne!(text, good(), "{section}");
        let e = err(&text);
        let name = key.split(' ').next().unwrap();
        assert!(
            e.contains("unknown field") && e.contains(name),
            "{key}: {e}"
        );
    }
}

#[test]
fn agent_port_is_isa_or_virtio() {
    let (_d, b) = base();
    let c = Config::parse(&good(), "t", &b, None).unwrap();
    assert_eq!(c.pool.driver.agent_port, airlock_qemu::AgentPort::Isa);
    let with = |keys: &str| good().replace("[pool]\n", &format!("[pool]\n{keys}\n"));
    let c = Config::parse(&with("agent_port = \"virtio\""), "t", &b, None).unwrap();
    assert_eq!(c.pool.driver.agent_port, airlock_qemu::AgentPort::Virtio);
    for bad in ["\"VIRTIO\"", "\"usb\"", "\"\""] {
        let e = err(&with(&format!("agent_port = {bad}")));
        assert!(
            e.contains("pool.agent_port") && e.contains("\"isa\"") && e.contains("\"virtio\""),
            "{bad}: {e}"
        );
    }
}

#[test]
fn export_has_defaults_and_checks_every_key() {
    let (_d, b) = base();
    let c = Config::parse(&good(), "test.toml", &b, None).unwrap();
    assert_eq!(c.export.retention, Duration::from_secs(24 * 3600));
    assert_eq!(c.export.captures_per_minute, 12);
    assert!(c.export.pacs.is_none() && c.export.worklist.is_none());
    let full = good()
        + r#"
[export]
uid_root = "1.2.392.200036.9999"
charset = "iso2022-ir87"
station = "AIRLOCK1"
calling_ae = "AIRLOCK_B"
[export.pacs]
host = "pacs.example"
port = 104
called_ae = "PACS"
[export.worklist]
host = "10.0.0.9"
port = 11112
called_ae = "WL"
timeout_s = 5
"#;
    let c = Config::parse(&full, "test.toml", &b, None).unwrap();
    let pacs = c.export.pacs.unwrap();
    assert_eq!(
        (
            pacs.host.as_str(),
            pacs.port,
            pacs.called_ae.as_str(),
            pacs.calling_ae.as_str()
        ),
        ("pacs.example", 104, "PACS", "AIRLOCK_B")
    );
    assert_eq!(c.export.worklist.unwrap().timeout, Duration::from_secs(5));
    assert_eq!(c.export.charset, airlock_dicom::Charset::Iso2022Ir87);
    assert_eq!(c.export.equipment.station.as_deref(), Some("AIRLOCK1"));
    let pacs = |extra: &str| {
        format!(
            "{}\n[export.pacs]\nhost = \"p\"\nport = 104\ncalled_ae = \"PACS\"\n{extra}",
            good()
        )
    };
    for (text, key) in [
        (good() + "[export]\nuid_root = \"1.02.3\"\n", "`export.uid_root`"),
        (good() + "[export]\nuid_root = \"1.2.826.0.1.3680043.10.543\"\n", "`export.uid_root`"),
        (good() + "[export]\ncharset = \"latin1\"\n", "`export.charset`"),
        (good() + "[export]\nstation = \"a\\\\b\"\n", "`export.station`"),
        (good() + "[export]\ncalling_ae = \"\"\n", "`export.calling_ae`"),
        (good() + "[export]\nretention_hours = 0\n", "`export.retention_hours`"),
        (good() + "[export]\ncaptures_per_minute = 1000\n", "`export.captures_per_minute`"),
        (pacs("timeout_s = 0"), "`export.pacs.timeout_s`"),
        (good() + "[export.pacs]\nhost = \"p q\"\nport = 104\ncalled_ae = \"PACS\"\n", "`export.pacs.host`"),
        (good() + "[export.pacs]\nhost = \"p\"\nport = 0\ncalled_ae = \"PACS\"\n", "`export.pacs.host`"),
        (good() + "[export.pacs]\nhost = \"p\"\nport = 104\ncalled_ae = \"WAY_TOO_LONG_AE_TITLE\"\n", "`export.pacs.called_ae`"),
        (good() + "[export.worklist]\nhost = \"w\"\nport = 104\ncalled_ae = \"A\\\\B\"\n", "`export.worklist.called_ae`"),
    ] {
        let e = err(&text);
        assert!(e.contains(key), "{key}: {e}");
    }
    let e = err(&(good() + "[export]\nbogus = 1\n"));
    assert!(e.contains("bogus"), "{e}");
}

#[test]
fn the_qga_probe_and_its_logon_wait() {
    let (_d, b) = base();
    let with =
        |readiness: &str| good().replace("[pool.display]", &format!("{readiness}\n[pool.display]"));
    let qga = "[pool.readiness]\nprobe = \"qga\"\ntimeout_s = 120";
    let c = Config::parse(&with(qga), "t", &b, None).unwrap();
    match &c.pool.driver.readiness {
        Readiness::Qga(q) => {
            assert_eq!(q.boot_timeout, Duration::from_secs(120));
            assert!(!q.accept_exec && q.logon.is_none());
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        c.pool.driver.readiness.agent_protocol(),
        airlock_qemu::AgentProtocol::Qga
    );
    let logon = format!(
        "{qga}\naccept_exec = true\n[pool.readiness.logon]\nuser = \"clinician\"\nquiet_s = 10"
    );
    let c = Config::parse(&with(&logon), "t", &b, None).unwrap();
    let Readiness::Qga(q) = &c.pool.driver.readiness else {
        panic!("not qga")
    };
    assert!(q.accept_exec);
    let l = q.logon.as_ref().unwrap();
    assert_eq!(
        (l.user.as_str(), l.quiet, l.busy_percent),
        ("clinician", Duration::from_secs(10), 5)
    );
    // Refused, each naming its key.
    for (text, key) in [
        (
            "[pool.readiness]\naccept_exec = true".to_owned(),
            "pool.readiness.accept_exec",
        ),
        (
            "[pool.readiness.logon]\nuser = \"x\"".to_owned(),
            "pool.readiness.logon",
        ),
        (format!("{qga}\ndelay_s = 5"), "pool.readiness.delay_s"),
        (
            format!("{qga}\n[pool.readiness.logon]\nuser = \"DOM\\\\x\""),
            "pool.readiness.logon.user",
        ),
        (
            format!("{qga}\n[pool.readiness.logon]\nuser = \"x\"\nbusy_percent = 0"),
            "pool.readiness.logon.busy_percent",
        ),
        (
            format!("{qga}\n[pool.readiness.logon]\nuser = \"x\"\nquiet_s = 60\ntimeout_s = 30"),
            "pool.readiness.logon.timeout_s",
        ),
    ] {
        let e = err(&with(&text));
        assert!(e.contains(key), "{key}: {e}");
    }
}
