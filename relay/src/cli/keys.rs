//! `relay keys`: make ed25519 signing keys.

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;

use super::Outcome;
use crate::bundle::SecretKey;

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Generate an ed25519 key pair: the secret as PKCS#8 PEM (mode 0600), the public key
    /// as one line `ed25519 <key-id> <base64>` to give to every relay and agent that
    /// must trust bundles signed with it.
    Generate {
        /// Where to write the secret key (PKCS#8 PEM, mode 0600).
        #[arg(long, value_name = "FILE")]
        secret: PathBuf,
        /// Where to write the public key line.
        #[arg(long, value_name = "FILE")]
        public: PathBuf,
        /// Overwrite existing key files (the old secret key is lost).
        #[arg(long)]
        force: bool,
    },
}

pub fn run(cmd: KeysCommand) -> anyhow::Result<Outcome> {
    match cmd {
        KeysCommand::Generate {
            secret,
            public,
            force,
        } => {
            if !force {
                for path in [&secret, &public] {
                    anyhow::ensure!(
                        !path.exists(),
                        "{} already exists (use --force to overwrite it)",
                        path.display()
                    );
                }
            }
            let key = SecretKey::generate()?;
            key.save(&secret, force)
                .with_context(|| format!("writing the secret key to {}", secret.display()))?;
            key.public()
                .save(&public, force)
                .with_context(|| format!("writing the public key to {}", public.display()))?;
            crate::outln!(
                "key {} written: secret {} (keep it offline), public {}",
                key.key_id(),
                secret.display(),
                public.display()
            )?;
            Ok(Outcome::Success)
        }
    }
}
