//! `relay certs init`, `relay users add`, `relay tokens add`: what an operator sets up
//! around a relay.

use std::io::Read;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};

use super::Outcome;
use crate::auth::{self, Role};
use crate::certs;
use crate::config::Config;

/// Where the relay's files are, from its configuration.
#[derive(Debug, Args)]
pub struct ConfigArg {
    /// Relay configuration file, to find the data directory and the htpasswd and token
    /// files.
    #[arg(long, env = "RELAY_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
}

impl ConfigArg {
    fn load(&self) -> anyhow::Result<Config> {
        Ok(Config::load(self.config.as_deref(), std::env::vars())?)
    }
}

#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Make a development CA and a server certificate it signs (ca.pem, server.pem,
    /// server.key). For trying the relay and for tests: bring your own PKI in production.
    Init {
        /// Directory to write into [default: <data_dir>/tls].
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// DNS names and IP addresses the server certificate covers (repeatable)
        /// [default: localhost, 127.0.0.1, ::1].
        #[arg(long = "name", value_name = "NAME")]
        names: Vec<String>,
        /// Validity of the server certificate, in days.
        #[arg(long, default_value_t = 825)]
        days: i64,
        /// Replace existing files.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        config: ConfigArg,
    },
}

#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Add or replace a user in the htpasswd file (bcrypt, as `htpasswd -B` writes) and
    /// record its role. Without --password-stdin a random password is made and printed.
    Add {
        name: String,
        /// reader (download), uploader (upload and download) or admin (everything).
        #[arg(long, value_parser = |s: &str| s.parse::<Role>())]
        role: Role,
        /// Read the password from standard input (first line).
        #[arg(long)]
        password_stdin: bool,
        #[command(flatten)]
        config: ConfigArg,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokensCommand {
    /// Make an access token (for upstream-style downloads with `Authorization: Bearer`).
    /// The token is printed once; only its SHA-256 is stored.
    Add {
        name: String,
        #[command(flatten)]
        config: ConfigArg,
    },
}

pub fn certs(cmd: CertsCommand) -> anyhow::Result<Outcome> {
    let CertsCommand::Init {
        dir,
        names,
        days,
        force,
        config,
    } = cmd;
    let dir = match dir {
        Some(d) => d,
        None => config.load()?.data_dir().join("tls"),
    };
    let names = if names.is_empty() {
        certs::default_names()
    } else {
        names
    };
    let files = certs::init(&dir, &names, days, force)?;
    crate::outln!("CA certificate:     {}", files.ca_cert.display())?;
    crate::outln!(
        "server certificate: {} ({})",
        files.server_cert.display(),
        names.join(", ")
    )?;
    crate::outln!("server key:         {}", files.server_key.display())?;
    Ok(Outcome::Success)
}

pub fn users(cmd: UsersCommand) -> anyhow::Result<Outcome> {
    let UsersCommand::Add {
        name,
        role,
        password_stdin,
        config,
    } = cmd;
    let config = config.load()?;
    let password = if password_stdin {
        let mut input = String::new();
        std::io::stdin()
            .read_to_string(&mut input)
            .context("reading the password from standard input")?;
        input.lines().next().unwrap_or_default().to_owned()
    } else {
        auth::random_password()?
    };
    let htpasswd = config.htpasswd();
    auth::add_user(
        &htpasswd,
        &config.data_dir().join("roles.toml"),
        &name,
        &password,
        role,
    )?;
    if password_stdin {
        crate::outln!("user {name} ({role:?}) written to {}", htpasswd.display())?;
    } else {
        crate::outln!(
            "user {name} ({role:?}) written to {}; password (shown once): {password}",
            htpasswd.display()
        )?;
    }
    crate::outln!("a running relay picks it up on SIGHUP")?;
    Ok(Outcome::Success)
}

pub fn tokens(cmd: TokensCommand) -> anyhow::Result<Outcome> {
    let TokensCommand::Add { name, config } = cmd;
    let config = config.load()?;
    let token = auth::add_token(&config.tokens(), &name)?;
    crate::outln!("{token}")?;
    eprintln!(
        "token {name} stored (hashed) in {}; shown once; a running relay picks it up on SIGHUP",
        config.tokens().display()
    );
    Ok(Outcome::Success)
}
