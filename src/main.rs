//! The `saltgate` command: `serve`, `check-config`, `sign`, `version` (and the hidden `assets`,
//! which writes the man pages and shell completions the packages ship).

mod assets;

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::Context;
use clap::{CommandFactory, Parser, Subcommand};
use saltgate::config::Config;
use saltgate::server;
use saltgate::server::notify::{self, Notifier};

/// mimalloc instead of glibc's malloc. Measured A/B on the built-in bus with signed 1 KiB hooks
/// (same build otherwise): 24 → 21 µs of CPU per hook, and RSS at 256 connections 30 → 26–27 MiB.
/// Version 2 without transparent huge pages: v3 holds freed pages for a second, which showed
/// as ~36 MiB against ~26–32 MiB at 256 connections on a master.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "saltgate",
    version,
    about = "A hardened, fast drop-in for Salt's salt-api",
    long_about = "A hardened, fast drop-in for Salt's salt-api: webhooks to the Salt Reactor and \
                  salt-api's lowstate API, next to a Salt master. It reads the master config \
                  (and master.d/*.conf), salt-api's rest_cherrypy block as it is, and its own \
                  saltgate block. Under systemd (Type=notify) it reports ready once it listens \
                  and is attached to the master's event bus. The operator guide: \
                  /usr/share/doc/saltgate/OPERATIONS.md."
)]
struct Cli {
    /// Log JSON lines instead of text.
    #[arg(long, global = true)]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the API. Without --config: the built-in event bus on 127.0.0.1:8000.
    Serve {
        /// The Salt master config file (or its directory), with `rest_cherrypy:`, `rest_wsgi:`
        /// and `saltgate:`.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Validate a config and print the effective settings.
    CheckConfig {
        /// The Salt master config file (or its directory).
        #[arg(long, short)]
        config: PathBuf,
        /// Instead of the effective settings, print what switching this master from salt-api
        /// (rest_cherrypy) to saltgate keeps, what it changes, and what to review first.
        #[arg(long)]
        compare_salt_api: bool,
        /// Also connect to the shared store (`saltgate.shared`): authenticate, select the
        /// database, PING; exit 1 with the reason when that fails.
        #[arg(long)]
        connect: bool,
    },
    /// Print the headers a sender would add to BODYFILE, to test a hook rule with curl.
    Sign {
        /// The scheme: github, gitlab, gitea, bitbucket, slack, stripe, standard_webhooks, hmac,
        /// token.
        #[arg(long)]
        provider: String,
        /// A file holding the secret.
        #[arg(long)]
        secret_file: PathBuf,
        /// hmac/token: the header carrying the signature or token.
        #[arg(long)]
        header: Option<String>,
        /// hmac: sha256 (default) or sha512.
        #[arg(long)]
        algorithm: Option<String>,
        /// hmac: hex (default) or base64.
        #[arg(long)]
        encoding: Option<String>,
        /// hmac: a prefix such as `sha256=`.
        #[arg(long)]
        prefix: Option<String>,
        /// The request body to sign.
        body_file: PathBuf,
    },
    /// Print the version.
    Version,
    /// Write the man pages (DIR/man) and shell completions (DIR/completions).
    #[command(hide = true)]
    Assets {
        /// The directory to write into.
        dir: PathBuf,
    },
}

fn load(path: Option<&PathBuf>) -> anyhow::Result<Config> {
    let env = environment();
    match path {
        Some(p) => Config::load(p, &env).with_context(|| format!("config {}", p.display())),
        None => Ok(Config::builtin()),
    }
}

/// The environment secrets (`secret_env`) are read from; a reload reads the same.
fn environment() -> HashMap<String, String> {
    std::env::vars().collect()
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Version => {
            println!("saltgate {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Command::Assets { dir } => assets::write(Cli::command(), &dir),
        Command::Sign {
            provider,
            secret_file,
            header,
            algorithm,
            encoding,
            prefix,
            body_file,
        } => {
            let settings = saltgate::config::hooks::RawVerify::from_flags(
                &provider,
                &secret_file,
                &[
                    ("header", header.as_deref()),
                    ("algorithm", algorithm.as_deref()),
                    ("encoding", encoding.as_deref()),
                    ("prefix", prefix.as_deref()),
                ],
            )?;
            let verifier = saltgate::config::hooks::verifier("sign", &settings, &HashMap::new())?;
            let body = std::fs::read(&body_file)
                .with_context(|| format!("reading {}", body_file.display()))?;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or_default();
            for (name, value) in verifier.sign(&body, now)? {
                println!("{name}: {value}");
            }
            Ok(())
        }
        Command::CheckConfig {
            config,
            compare_salt_api,
            connect,
        } => {
            let config = load(Some(&config))?;
            if connect {
                check_connect(&config)?;
            }
            if compare_salt_api {
                print!("{}", saltgate::config::compare::report(&config));
                return Ok(());
            }
            println!("{}", saltgate::config::render_effective(&config));
            for warning in saltgate::config::warnings(&config) {
                eprintln!("warning: {warning}");
            }
            for note in saltgate::config::notes(&config) {
                eprintln!("note: {note}");
            }
            Ok(())
        }
        Command::Serve { config: path } => {
            saltgate::telemetry::init(cli.log_json);
            let config = load(path.as_ref())?;
            let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
            runtime.block_on(serve(config, path))
        }
    }
}

/// `check-config --connect`: reaches the shared store, if one is configured.
fn check_connect(config: &Config) -> anyhow::Result<()> {
    let Some(shared) = &config.shared else {
        eprintln!("connect: no saltgate.shared store is configured; nothing to reach");
        return Ok(());
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let deadline = shared.timeout.max(std::time::Duration::from_secs(2));
    match runtime.block_on(saltgate::shared::check_connect(shared, deadline)) {
        Ok(answer) => {
            eprintln!("connect: saltgate.shared: {answer}");
            Ok(())
        }
        Err(why) => anyhow::bail!("saltgate.shared: cannot use the store: {why}"),
    }
}

async fn serve(config: Config, path: Option<PathBuf>) -> anyhow::Result<()> {
    // Before anything can take time: SIGHUP (systemd's ExecReload) must never end the process.
    let hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("installing the SIGHUP handler")?;
    let notifier = Notifier::from_socket_var(std::env::var_os("NOTIFY_SOCKET").as_deref());
    let limits = server::Limits::from_config(&config);
    let warnings = saltgate::config::warnings(&config);
    // First: a spool that cannot be opened stops the start before anything listens.
    let state = server::build_state(config)?;
    let listeners = server::bind_all(&state.config).await?;
    let mut listening = Vec::with_capacity(listeners.len());
    for listener in &listeners {
        let address = listener.tcp.local_addr().context("listener address")?;
        tracing::info!(
            dialect = listener.dialect.block(),
            address = %address,
            tls = listener.tls.is_some(),
            version = env!("CARGO_PKG_VERSION"),
            "saltgate listening"
        );
        listening.push(address.to_string());
    }
    for warning in warnings {
        tracing::warn!("{warning}");
    }
    let listening = listening.join(", ");
    tokio::spawn(notify::announce_ready(
        notifier.clone(),
        state.bus.clone(),
        listening.clone(),
    ));
    let reloader = path.map(|path| {
        std::sync::Arc::new(server::reload::Reloader::new(
            path,
            environment(),
            state.clone(),
            &listeners,
        ))
    });
    tokio::spawn(server::reload::on_hangup(
        hangups,
        notifier.clone(),
        reloader,
        state.clone(),
        listening,
    ));
    server::serve(state, listeners, limits, shutdown_signal(notifier)).await
}

async fn shutdown_signal(notifier: Notifier) {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("Shutdown signal received");
    notifier.stopping();
}
