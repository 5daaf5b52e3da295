//! `relay serve`: load the configuration, make what a zero-config start needs, open the
//! relay, and serve until SIGTERM or SIGINT; SIGHUP reloads the certificate, the
//! credentials and the trusted keys (`[trust] keys`, read from the file again).

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use tokio::signal::unix::{SignalKind, signal};
use tracing::{error, info, warn};

use super::Outcome;
use crate::config::Config;
use crate::server::{self, Relay};

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Configuration file (TOML). Without one, every key has its default; RELAY_<SECTION>_<KEY>
    /// environment variables override either.
    #[arg(long, env = "RELAY_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Listen address (overrides listen.address); port 0 picks a free port.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Data directory (overrides storage.data_dir).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Serve plain HTTP, without TLS. Credentials and bundles then cross the network in
    /// clear: only behind a TLS-terminating proxy on the same host.
    #[arg(long)]
    pub insecure_http: bool,
}

pub fn run(args: ServeArgs) -> anyhow::Result<Outcome> {
    let mut config = Config::load(args.config.as_deref(), std::env::vars())?;
    if let Some(addr) = args.listen {
        config.listen.address = addr;
    }
    if let Some(dir) = args.data_dir {
        config.storage.data_dir = dir;
    }
    if args.insecure_http {
        config.listen.insecure_http = true;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(serve(config, args.config))?;
    Ok(Outcome::Success)
}

async fn serve(config: Config, config_path: Option<PathBuf>) -> anyhow::Result<()> {
    if config.listen.insecure_http {
        warn!(
            "PLAIN HTTP: --insecure-http is set; credentials and bundles cross the network unencrypted"
        );
        eprintln!(
            "WARNING: serving plain HTTP without TLS (--insecure-http). Use only behind a TLS-terminating proxy."
        );
    }
    for warning in config.insecure_credentials()? {
        warn!("CREDENTIAL IN CLEAR: {warning}");
    }
    let prepared = {
        let config = config.clone();
        tokio::task::spawn_blocking(move || server::prepare(&config))
            .await
            .context("preparing the data directory")??
    };
    let (relay, notes) = Relay::open(config.clone(), prepared.trust.clone())
        .await
        .context("opening the relay")?;
    for note in notes {
        warn!("{note}");
    }
    if let Some(key) = &prepared.sample_key
        && server::install_sample(&relay, key).await?
    {
        info!(key_id = %key.key_id(), "serving the built-in sample bundle until a real one arrives");
    }
    let listener = tokio::net::TcpListener::bind(config.listen.address)
        .await
        .with_context(|| format!("listening on {}", config.listen.address))?;
    let addr = listener.local_addr()?;
    // The signal handlers are in place before the banner says the relay listens: a
    // supervisor (or a test) that signals as soon as it reads the banner is heard.
    let mut hangup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let mut terminate =
        signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    // The relay serves whether or not anyone reads its banner (a closed stdout).
    if let Err(e) = print_banner(&config, addr, &prepared) {
        tracing::warn!(error = %e, "printing the start banner");
    }

    let reload_relay = std::sync::Arc::clone(&relay);
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            // The trusted keys are read from the configuration file again: removing a key
            // there and sending SIGHUP demotes what it signed.
            let trust_keys = match Config::load(config_path.as_deref(), std::env::vars()) {
                Ok(fresh) => fresh.trust.keys,
                Err(e) => {
                    error!(error = %e, "reload: the configuration does not load; nothing reloaded");
                    continue;
                }
            };
            match reload_relay.reload(&trust_keys).await {
                Ok(demoted) => {
                    for note in demoted {
                        warn!("{note}");
                    }
                    info!("reloaded certificate, credentials and trusted keys")
                }
                Err(e) => {
                    error!(error = %e, "reload failed; keeping the previous certificate and credentials")
                }
            }
        }
    });
    let shutdown = async move {
        tokio::select! {
            _ = terminate.recv() => info!("SIGTERM"),
            _ = interrupt.recv() => info!("SIGINT"),
        }
    };
    relay.serve(listener, shutdown).await?;
    Ok(())
}

/// The file of the data directory that keeps the credentials a zero-config start made.
pub const GENERATED_CREDENTIALS: &str = "generated-credentials";

fn print_banner(
    config: &Config,
    addr: SocketAddr,
    prepared: &server::Prepared,
) -> std::io::Result<()> {
    let scheme = if config.listen.insecure_http {
        "http"
    } else {
        "https"
    };
    let host = match addr.ip() {
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        std::net::IpAddr::V4(ip) => ip.to_string(),
    };
    let url = format!("{scheme}://{host}:{}", addr.port());
    crate::outln!("relay listening on {url}")?;
    crate::outln!("data directory: {}", config.data_dir().display())?;
    if let Some(ca) = &prepared.dev_ca {
        crate::outln!("development CA (trust it in clients): {}", ca.display())?;
    }
    // Shown only to a person at a terminal: under systemd stdout is the journal, which
    // others may read. Kept in a 0600 file of the data directory either way.
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stdout());
    if !prepared.generated_users.is_empty() {
        let file = config.data_dir().join(GENERATED_CREDENTIALS);
        let text: String = prepared
            .generated_users
            .iter()
            .map(|(user, password)| format!("{user}: {password}\n"))
            .collect();
        let kept = match crate::bundle::durable::write(
            &file,
            text.as_bytes(),
            crate::bundle::durable::Access::Exactly(0o600),
        ) {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(file = %file.display(), error = %e, "keeping the generated credentials");
                false
            }
        };
        if terminal {
            crate::outln!(
                "generated credentials (stored hashed in {}{}):",
                config.htpasswd().display(),
                if kept {
                    format!(
                        "; in clear in {}, mode 0600: delete it once noted",
                        file.display()
                    )
                } else {
                    String::new()
                }
            )?;
            for (user, password) in &prepared.generated_users {
                crate::outln!("  {user}: {password}")?;
            }
        } else if kept {
            let users: Vec<&str> = prepared
                .generated_users
                .iter()
                .map(|(u, _)| u.as_str())
                .collect();
            crate::outln!(
                "generated credentials for {}: in {} (mode 0600; not printed, this output is \
                 not a terminal and may be a log: read the file, then delete it)",
                users.join(", "),
                file.display()
            )?;
        } else {
            crate::outln!(
                "generated credentials for this start could not be kept (see the log) and are \
                 not printed here: set new ones with `relay users add`"
            )?;
        }
    }
    let cacert = prepared
        .dev_ca
        .as_ref()
        .map(|ca| format!("--cacert {} ", ca.display()))
        .unwrap_or_default();
    let user = match prepared.generated_users.first() {
        Some((u, p)) if terminal => format!("-u {u}:{p}"),
        Some((u, _)) => format!("-u {u}:PASSWORD"),
        None => "-u USER:PASSWORD".to_owned(),
    };
    crate::outln!("try: curl {cacert}{user} {url}/api/v1/feeds/bundle -o bundle.tar.gz")?;
    use std::io::Write;
    let _ = std::io::stdout().flush();
    Ok(())
}
