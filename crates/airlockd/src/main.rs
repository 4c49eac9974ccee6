//! `airlockd`, the Airlock broker.
#![forbid(unsafe_code)]

mod anchor;
mod api;
mod audit_api;
mod config;
mod export;
mod limits;
mod syslog;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use config::Config;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Parser)]
#[command(
    name = "airlockd",
    version,
    about = "Airlock broker: a pool of disposable desktops for untrusted discs"
)]
struct Cli {
    /// The TOML config file.
    #[arg(long, global = true, default_value = "/etc/airlock/airlockd.toml")]
    config: PathBuf,
    /// Overrides `server.state_dir`.
    #[arg(long, global = true)]
    state_dir: Option<PathBuf>,
    /// Log lines as text, or as one JSON object per line (for a log collector); the
    /// default is `AIRLOCK_LOG_FORMAT`, else text.
    #[arg(long, global = true, value_enum)]
    log_format: Option<LogFormat>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the broker (the default).
    Serve,
    /// Check the config file and exit.
    CheckConfig,
    /// Audit log tools.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Print the SHA-256 of a token for the config (reads the token from stdin if not given).
    HashToken { token: Option<String> },
    /// Print the argon2 hash of a web console password for `[[console.accounts]]`
    /// (reads the password from stdin, one line).
    HashPassword,
    /// Stop every desktop QEMU process of this state directory (they otherwise outlive the broker).
    StopDesktops,
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check the hash chain, and every anchor of `audit.anchor_file` against it; exits 1
    /// and names the first broken record, or the anchor the chain no longer holds
    /// (records cut off the end, or a rewritten tail).
    Verify,
    /// Print the newest records.
    Tail {
        #[arg(short, long, default_value_t = 20)]
        n: usize,
    },
    /// Export the records a filter matches, oldest first, as CSV (with a header row) or
    /// JSON lines; streamed, so any number of records. Filters as `GET /v1/audit`
    /// (docs/audit.md).
    Export(Box<ExportArgs>),
}

/// `airlockd audit export`.
#[derive(clap::Args)]
struct ExportArgs {
    /// `csv` or `jsonl`.
    #[arg(long)]
    format: String,
    /// Write to this file instead of stdout.
    #[arg(short, long)]
    output: Option<PathBuf>,
    #[arg(long)]
    terminal: Option<String>,
    #[arg(long)]
    user: Option<String>,
    #[arg(long)]
    desktop: Option<String>,
    #[arg(long)]
    lease: Option<String>,
    /// An action (repeat, or separate with commas).
    #[arg(long)]
    action: Vec<String>,
    /// An ATNA EventID, e.g. 110113.
    #[arg(long)]
    event: Option<String>,
    /// An ATNA outcome: 0, 4, 8 or 12.
    #[arg(long)]
    outcome: Option<String>,
    /// From this time on (Unix ms, a date or an RFC 3339 UTC time).
    #[arg(long)]
    from: Option<String>,
    /// Before this time.
    #[arg(long)]
    to: Option<String>,
    /// Text the details contain.
    #[arg(long)]
    text: Option<String>,
}

impl ExportArgs {
    /// The filters as the query pairs `GET /v1/audit` takes, so both are validated alike.
    fn pairs(&self) -> Vec<(String, String)> {
        let mut p = vec![("format".to_owned(), self.format.clone())];
        let opt = [
            ("terminal", &self.terminal),
            ("user", &self.user),
            ("desktop", &self.desktop),
            ("lease", &self.lease),
            ("event", &self.event),
            ("outcome", &self.outcome),
            ("from", &self.from),
            ("to", &self.to),
            ("q", &self.text),
        ];
        for (k, v) in opt {
            if let Some(v) = v {
                p.push((k.to_owned(), v.clone()));
            }
        }
        for a in &self.action {
            p.push(("action".to_owned(), a.clone()));
        }
        p
    }
}

/// How log lines are written (`--log-format`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, `fields` (with
    /// `message`), and the `span`s.
    Json,
}

/// The log format: `--log-format`, else `AIRLOCK_LOG_FORMAT` (`text` or `json`).
fn log_format(flag: Option<LogFormat>) -> Result<LogFormat> {
    if let Some(f) = flag {
        return Ok(f);
    }
    match std::env::var("AIRLOCK_LOG_FORMAT") {
        Err(_) => Ok(LogFormat::Text),
        Ok(v) => match v.trim() {
            "" | "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => bail!("AIRLOCK_LOG_FORMAT is {other:?}; use `text` or `json`"),
        },
    }
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("AIRLOCK_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    init_tracing(log_format(cli.log_format)?);
    match cli.command.unwrap_or(Command::Serve) {
        Command::HashToken { token } => {
            let token = match token {
                Some(t) => t,
                None => {
                    let mut s = String::new();
                    std::io::stdin()
                        .read_line(&mut s)
                        .context("read the token from stdin")?;
                    s.trim_end_matches(['\r', '\n']).to_owned()
                }
            };
            if token.is_empty() {
                bail!("the token is empty; give a long random token (e.g. `openssl rand -hex 32`)");
            }
            println!("{}", config::hash_token(&token));
            Ok(())
        }
        Command::HashPassword => {
            let mut s = String::new();
            std::io::stdin()
                .read_line(&mut s)
                .context("read the password from stdin")?;
            let password = s.trim_end_matches(['\r', '\n']);
            if password.chars().count() < 12 {
                bail!("the password is shorter than 12 characters; choose a longer one");
            }
            let hash = airlock_console::login::hash_password(password)
                .map_err(|e| anyhow::anyhow!("cannot hash the password: {e}"))?;
            println!("{hash}");
            Ok(())
        }
        Command::CheckConfig => {
            let c = Config::load(&cli.config, cli.state_dir.as_deref())?;
            println!(
                "{}: ok ({} desktops, accel {}, reset {}, {} terminals)",
                cli.config.display(),
                c.pool.desktops.len(),
                c.pool.driver.accel.as_str(),
                c.pool.reset_method,
                c.terminals.len()
            );
            Ok(())
        }
        Command::Audit { command } => {
            let c = Config::load(&cli.config, cli.state_dir.as_deref())?;
            let db = c.pool.state_dir.join("airlock.db");
            if !db.exists() {
                bail!(
                    "no database at {}; has airlockd run with this state directory?",
                    db.display()
                );
            }
            let store = airlock_store::Store::open_read_only(&db)
                .with_context(|| format!("open {}", db.display()))?;
            match command {
                AuditCommand::Verify => {
                    let r = store.verify_audit()?;
                    let chain_ok = match r.first_broken {
                        None => {
                            println!("audit chain intact: {} records, head {}", r.records, r.head);
                            true
                        }
                        Some((seq, why)) => {
                            println!("audit chain BROKEN at record {seq}: {why}");
                            println!("records 1..{} verify; last good head {}", seq - 1, r.head);
                            false
                        }
                    };
                    let file = &c.audit.file;
                    let f = anchor::check_file(file, |a| store.check_anchor(a))
                        .context("check the audit anchors")?;
                    let anchors_ok = match (&f.failed, &f.latest) {
                        (Some((a, check)), _) => {
                            println!("{}", anchor::explain(file, a, check));
                            false
                        }
                        (None, Some(latest)) => {
                            println!(
                                "anchors hold: {} anchors in {}; the latest names {}",
                                f.anchors,
                                file.display(),
                                anchor::describe(latest)
                            );
                            true
                        }
                        (None, None) => {
                            println!(
                                "no anchor in {} (audit.anchor_file): records cut off the end cannot be detected",
                                file.display()
                            );
                            true
                        }
                    };
                    if f.other_lines > 0 {
                        println!(
                            "{} lines of {} are not anchors (ignored)",
                            f.other_lines,
                            file.display()
                        );
                    }
                    if !(chain_ok && anchors_ok) {
                        std::process::exit(1);
                    }
                    Ok(())
                }
                AuditCommand::Tail { n } => {
                    for r in store.audit_tail(n)? {
                        println!("{}", serde_json::to_string(&r)?);
                    }
                    Ok(())
                }
                AuditCommand::Export(args) => {
                    let req = audit_api::parse_audit(&args.pairs())
                        .map_err(|e| anyhow::anyhow!("{}", e.replace("query key", "option")))?;
                    let Some(format) = req.export else {
                        bail!("--format: use csv or jsonl");
                    };
                    let reader = airlock_store::Reader::open(&db)
                        .with_context(|| format!("open {}", db.display()))?;
                    let n = match &args.output {
                        Some(path) => {
                            let f = std::fs::File::create(path)
                                .with_context(|| format!("create {}", path.display()))?;
                            airlock_store::export_audit(&reader, &req.query.filter, format, f)?
                        }
                        None => airlock_store::export_audit(
                            &reader,
                            &req.query.filter,
                            format,
                            std::io::stdout().lock(),
                        )?,
                    };
                    eprintln!("{n} records exported");
                    Ok(())
                }
            }
        }
        Command::StopDesktops => {
            let c = Config::load(&cli.config, cli.state_dir.as_deref())?;
            let rt = tokio::runtime::Runtime::new()?;
            let mut n = 0;
            for sub in ["desktops", "templates"] {
                let Ok(entries) = std::fs::read_dir(c.pool.state_dir.join(sub)) else {
                    continue;
                };
                for e in entries.flatten() {
                    let run = e.path().join("run");
                    if run.join("qemu.pid").exists() {
                        rt.block_on(airlock_qemu::process::kill_stale(&run));
                        n += 1;
                    }
                }
            }
            // Their cgroups go too (a cgroup that still holds a process stays).
            let mut left = 0;
            if let Ok(cg) = airlock_qemu::confine::Host::detect().cgroups {
                for _ in 0..20 {
                    left =
                        airlock_qemu::confine::remove_instance(&cg, &c.pool.driver.cgroup_instance);
                    if left == 0 {
                        break;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
            }
            println!(
                "stopped the desktops of {} ({n} run directories checked)",
                c.pool.state_dir.display()
            );
            if left > 0 {
                println!("{left} cgroup(s) of this broker still hold a process and were kept");
            }
            Ok(())
        }
        Command::Serve => {
            let c = Config::load(&cli.config, cli.state_dir.as_deref())?;
            if let Some(p) = &c.pool.driver.placement {
                // Before the runtime exists: its threads inherit the main thread's CPUs.
                let me = i32::try_from(std::process::id()).context("process id")?;
                airlock_qemu::affinity::pin_process(me, p.housekeeping())
                    .context("pin airlockd to the housekeeping CPUs (pool.cpus)")?;
            }
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(serve(c))
        }
    }
}

async fn serve(config: Config) -> Result<()> {
    let accel = config.pool.driver.accel;
    tracing::info!(
        accel = accel.as_str(),
        desktops = config.pool.desktops.len(),
        reset = %config.pool.reset_method,
        state_dir = %config.pool.state_dir.display(),
        "starting airlockd {}",
        env!("CARGO_PKG_VERSION")
    );
    if accel == airlock_qemu::Accel::Tcg {
        tracing::warn!("accelerator is TCG (software emulation): desktops will be slow; use accel = \"kvm\" on a real host");
    } else {
        tracing::info!("accelerator is KVM (hardware virtualization)");
    }
    match &config.pool.driver.placement {
        Some(p) => tracing::info!(
            desktop_cpus = %p.desktops(),
            housekeeping_cpus = %p.housekeeping(),
            "CPU placement: desktop vCPUs on CPUs {}; QEMU device models, I/O and airlockd on CPUs {}",
            p.desktops(),
            p.housekeeping()
        ),
        None => tracing::info!(
            "no CPU placement (pool.cpus unset): desktop vCPUs, QEMU device models and airlockd share every CPU"
        ),
    }
    match config.metrics_token_sha256 {
        Some(_) => tracing::info!("/metrics asks for the bearer token of [metrics]"),
        None => tracing::info!(
            "/metrics is open to anyone who reaches the listener (no [metrics] token_sha256 or token_file); it names no patient or user, but set a token if the listener is reachable beyond the monitoring host"
        ),
    }
    // Before the pool: a broker that cannot anchor its audit chain does not start, and
    // the anchors are compared with the database as it was left.
    let anchorer = Arc::new(anchor::Anchorer::open(&config.audit)?);
    {
        let (a, db) = (anchorer.clone(), config.pool.state_dir.join("airlock.db"));
        tokio::task::spawn_blocking(move || a.check_at_start(&db)).await?;
    }
    let pool = airlock_pool::Pool::start(config.pool.clone())
        .await
        .context("start the desktop pool")?;
    {
        let (a, p) = (anchorer.clone(), pool.clone());
        tokio::task::spawn_blocking(move || a.anchor(&p, "start")).await?;
    }
    tokio::spawn(anchorer.clone().run(pool.clone(), config.audit.interval));
    // Every audit record to the syslog server, from its own read-only connection.
    let forward = match &config.audit_forward {
        Some(f) => Some(Arc::new(
            syslog::AuditForward::start(f, &config.pool.state_dir, &pool)
                .context("start audit forwarding ([audit.forward])")?,
        )),
        None => None,
    };
    // Searches, exports and the chain's verification read through their own read-only
    // connections, never under the pool's store lock.
    let db = config.pool.state_dir.join("airlock.db");
    let reader = airlock_store::Reader::open(&db)
        .with_context(|| format!("open {} for reading", db.display()))?;
    let chain = airlock_store::ChainMonitor::new(reader);
    tokio::spawn(audit_api::run_verifier(
        chain.clone(),
        pool.clone(),
        config.audit.full_verify_interval,
    ));
    let export = Arc::new(
        export::Exporter::new(config.export.clone(), &config.pool.state_dir)
            .context("cannot set up the captures folder under server.state_dir")?,
    );
    {
        // Captures past their retention time are deleted at start and every 10 minutes.
        let export = export.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(600));
            loop {
                tick.tick().await;
                let ex = export.clone();
                if let Ok(n) = tokio::task::spawn_blocking(move || ex.sweep()).await {
                    if n > 0 {
                        tracing::info!(deleted = n, "deleted captures past export.retention_hours");
                    }
                }
            }
        });
    }
    let console = airlock_console::Console::new(
        pool.clone(),
        airlock_console::ConsoleConfig {
            credentials: config.console.credentials.clone(),
            session_ttl: config.console.session_ttl,
            secure_cookies: config.tls.is_some(),
            min_clean: config.console.min_clean,
        },
        chain.clone(),
    )?;
    let accounts: Vec<&str> = config.console.credentials.names().collect();
    tracing::info!(
        accounts = ?accounts,
        "web console at /console: log in with a [[console.accounts]] password, or as `token` with the admin token"
    );
    let config = Arc::new(config);
    let app = api::router(api::AppState {
        pool: pool.clone(),
        config: config.clone(),
        limits: Arc::new(limits::Limiter::new(&config.limits)),
        anchor: anchorer.clone(),
        chain,
        forward: forward.clone(),
        console,
        export: export.clone(),
    });
    let served = listen_and_serve(&config, app).await;
    // Refused USB control requests still waiting for their lease's one record.
    pool.flush_usb_refused(true);
    if let Err(e) = pool.audit(airlock_store::AuditEntry::new("broker_stopped")) {
        tracing::warn!(error = %airlock_pool::ErrorChain(&e), "cannot audit the broker's stop");
    }
    // The records of the stop too, if the syslog server takes them within a few seconds
    // (else they are sent at the next start).
    if let Some(f) = &forward {
        f.shutdown().await;
    }
    // At shutdown (SIGTERM, ctrl-c) and after a failure alike: the head as it is now.
    let (a, p) = (anchorer, pool);
    tokio::task::spawn_blocking(move || a.anchor(&p, "shutdown")).await?;
    served
}

async fn listen_and_serve(config: &config::Config, app: axum::Router) -> Result<()> {
    let listener = std::net::TcpListener::bind(config.listen).with_context(|| {
        format!(
            "listen on {} (server.listen); is another airlockd running?",
            config.listen
        )
    })?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    // stdout is for people (and for tests that need the port); logs go to stderr.
    println!("airlockd listening on {scheme}://{addr}");
    println!("  web console: {scheme}://{addr}/console   health: {scheme}://{addr}/healthz   metrics: {scheme}://{addr}/metrics");
    let handle = axum_server::Handle::new();
    let h2 = handle.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down; desktops keep running and are re-attached at the next start (`airlockd stop-desktops` stops them)");
        h2.graceful_shutdown(Some(std::time::Duration::from_secs(5)));
    });
    match &config.tls {
        Some((cert, key)) => {
            let _ = rustls::crypto::ring::default_provider().install_default();
            let tls = axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key)
                .await
                .with_context(|| {
                    format!(
                        "load TLS certificate {} and key {}",
                        cert.display(),
                        key.display()
                    )
                })?;
            // TCP_NODELAY on every connection: a usbredir stream carries small
            // packets that must not wait for the peer's delayed ACK (Nagle), e.g.
            // the data and command requests UAS queues right after a status request.
            let acceptor = axum_server::tls_rustls::RustlsAcceptor::new(tls)
                .acceptor(axum_server::accept::NoDelayAcceptor::new());
            axum_server::from_tcp(listener)?
                .acceptor(acceptor)
                .handle(handle)
                .serve(app.into_make_service_with_connect_info::<std::net::SocketAddr>())
                .await?;
        }
        None => {
            axum_server::from_tcp(listener)?
                .acceptor(axum_server::accept::NoDelayAcceptor::new())
                .handle(handle)
                .serve(app.into_make_service_with_connect_info::<std::net::SocketAddr>())
                .await?;
        }
    }
    Ok(())
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
