//! `relay bundle build|verify|inspect`.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;

use super::{Outcome, TrustArgs};
use crate::bundle::{
    self, BuildOptions, Limits, Manifest, SecretKey, Sequence, Signature, Timestamp, TrustStore,
};

#[derive(Debug, Subcommand)]
pub enum BundleCommand {
    /// Build a signed bundle from a feeds directory.
    ///
    /// Feed files live under DIR/<kind>/ (kinds: osv, domains, ips, apps); each is
    /// validated for its kind and the first bad line is reported as file:line. Files named
    /// README* or starting with "." are skipped. The same inputs and --created give
    /// byte-identical output. Beside FILE goes FILE.idx, its segment index: publish it
    /// with the bundle so that clients holding an earlier bundle fetch only what changed.
    Build {
        /// Directory holding osv/, domains/, ips/ and apps/.
        #[arg(long, value_name = "DIR")]
        feeds: PathBuf,
        /// Secret signing key (PKCS#8 PEM from `relay keys generate`).
        #[arg(long, value_name = "SECRET")]
        key: PathBuf,
        /// Sequence number: must be higher than any bundle this origin published before.
        #[arg(long, value_name = "N")]
        sequence: u64,
        /// Name of the publishing origin.
        #[arg(long, value_name = "NAME")]
        origin: String,
        /// How long the bundle stays valid after --created (e.g. 30d, 12h).
        #[arg(long, value_name = "DURATION", default_value = "30d", value_parser = humantime::parse_duration)]
        expires_in: std::time::Duration,
        /// Creation time (RFC 3339); default now.
        #[arg(long, value_name = "RFC3339")]
        created: Option<Timestamp>,
        /// Output file (written atomically).
        #[arg(short, long, value_name = "FILE")]
        output: PathBuf,
    },
    /// Verify a bundle: signature by a trusted key, every file's hash and size, the
    /// layout, the caps and expiry. Exit 0 with a summary, or 1 with the rule broken.
    Verify {
        /// Bundle file (`-` for standard input).
        file: PathBuf,
        #[command(flatten)]
        trust: TrustArgs,
        /// Sequence already held: refuse bundles that are not newer.
        #[arg(long, value_name = "N")]
        held_sequence: Option<u64>,
    },
    /// Write the delta that builds bundle NEW from bundle OLD (the changed segments as edits
    /// of OLD's), to publish beside NEW on a custom location: clients holding OLD fetch it
    /// instead of the changed segments. Default output: NEW.delta-<first 16 hex digits of
    /// OLD's SHA-256>, where clients look for it.
    Delta {
        /// The earlier bundle.
        #[arg(long, value_name = "OLD")]
        from: PathBuf,
        /// The new bundle.
        #[arg(long, value_name = "NEW")]
        to: PathBuf,
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Show a bundle's manifest WITHOUT verifying it (use `verify` to trust it).
    Inspect {
        /// Bundle file (`-` for standard input).
        file: PathBuf,
        /// Print the manifest and signature as JSON.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(cmd: BundleCommand) -> anyhow::Result<Outcome> {
    match cmd {
        BundleCommand::Build {
            feeds,
            key,
            sequence,
            origin,
            expires_in,
            created,
            output,
        } => {
            let key = SecretKey::load(&key)?;
            let created = created.unwrap_or_else(Timestamp::now);
            let options = BuildOptions {
                sequence: Sequence(sequence),
                origin,
                created,
                expires: created.saturating_add(expires_in),
            };
            let (manifest, index) = write_atomically(&output, |out| {
                bundle::build_indexed(&feeds, &key, &options, out).with_context(|| {
                    format!("building {} from {}", output.display(), feeds.display())
                })
            })?;
            let index_path = bundle::index::sidecar_path(&output);
            write_atomically(&index_path, |out| {
                out.write_all(&index.encode())
                    .with_context(|| format!("writing {}", index_path.display()))
            })?;
            let records: u64 = manifest.files.iter().map(|f| f.records).sum();
            crate::outln!(
                "built {}: sequence {}, {} files, {} records, key {}, expires {}",
                output.display(),
                manifest.sequence,
                manifest.files.len(),
                records,
                manifest.key_id,
                manifest.expires
            )?;
            Ok(Outcome::Success)
        }
        BundleCommand::Delta { from, to, output } => {
            let index = |path: &Path| -> anyhow::Result<bundle::index::SegmentIndex> {
                bundle::index::of_file(path)
                    .with_context(|| path.display().to_string())?
                    .with_context(|| {
                        format!("{}: no segments (not made by this builder)", path.display())
                    })
            };
            let (old, new) = (index(&from)?, index(&to)?);
            let output = output.unwrap_or_else(|| {
                PathBuf::from(bundle::delta::sidecar_url(
                    &to.display().to_string(),
                    &old.bundle_sha256,
                ))
            });
            let covered = write_atomically(&output, |out| {
                let mut old_file = io::BufReader::new(
                    File::open(&from).with_context(|| format!("opening {}", from.display()))?,
                );
                let mut new_file = io::BufReader::new(
                    File::open(&to).with_context(|| format!("opening {}", to.display()))?,
                );
                bundle::delta::make(&mut old_file, &old, &mut new_file, &new, out)
                    .with_context(|| format!("writing {}", output.display()))
            })?;
            let size = std::fs::metadata(&output)?.len();
            crate::outln!(
                "wrote {}: {covered} changed segments as edits, {size} bytes (the new bundle: {} bytes)",
                output.display(),
                new.bundle_size()
            )?;
            Ok(Outcome::Success)
        }
        BundleCommand::Verify {
            file,
            trust,
            held_sequence,
        } => {
            let trust = TrustStore::load(&trust.trust)?;
            let input = open(&file)?;
            match bundle::verify(
                input,
                &trust,
                &Limits::default(),
                Timestamp::now(),
                held_sequence.map(Sequence),
            ) {
                Ok(v) => {
                    crate::outln!("OK {}: {}", file.display(), v.summary())?;
                    Ok(Outcome::Success)
                }
                Err(bundle::VerifyError::Read(e)) => {
                    Err(e).with_context(|| format!("reading {}", file.display()))
                }
                Err(e) => {
                    crate::outln!("FAILED {}: {e}", file.display())?;
                    eprintln!("hint: {}", e.next_step());
                    Ok(Outcome::CheckFailed)
                }
            }
        }
        BundleCommand::Inspect { file, json } => {
            let (manifest, signature) = bundle::inspect(open(&file)?, &Limits::default())
                .with_context(|| format!("reading {}", file.display()))?;
            if json {
                let out = serde_json::json!({
                    "verified": false,
                    "manifest": manifest,
                    "signature": signature,
                });
                crate::outln!("{}", serde_json::to_string_pretty(&out)?)?;
            } else {
                print_manifest(&manifest, &signature)?;
            }
            Ok(Outcome::Success)
        }
    }
}

fn print_manifest(m: &Manifest, sig: &Signature) -> std::io::Result<()> {
    crate::outln!("NOT VERIFIED: run `relay bundle verify` to check signature and contents")?;
    crate::outln!("format    {}", m.format)?;
    crate::outln!("sequence  {}", m.sequence)?;
    crate::outln!("origin    {}", m.origin)?;
    crate::outln!("created   {}", m.created)?;
    crate::outln!("expires   {}", m.expires)?;
    crate::outln!("key id    {} (signature names {})", m.key_id, sig.key_id)?;
    crate::outln!("files     {}", m.files.len())?;
    for f in &m.files {
        crate::outln!(
            "  {:<8} {:>10} bytes {:>8} records  {}  {}",
            f.kind,
            f.size,
            f.records,
            f.sha256,
            f.path
        )?;
        for input in &f.inputs {
            let c = &input.counts;
            crate::outln!(
                "           from {} ({}), retrieved {}, sha256 {}, {} bytes{}",
                input.name,
                input.location,
                input.retrieved,
                input.sha256,
                input.size,
                input
                    .license
                    .as_deref()
                    .map(|l| format!(", license {l}"))
                    .unwrap_or_default()
            )?;
            crate::outln!(
                "             read {}, kept {}, merged {}, withdrawn {}, refused {}",
                c.read,
                c.kept,
                c.merged,
                c.withdrawn,
                c.refused
            )?;
        }
    }
    Ok(())
}

fn open(path: &Path) -> anyhow::Result<Box<dyn Read>> {
    if path == Path::new("-") {
        return Ok(Box::new(io::stdin().lock()));
    }
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    Ok(Box::new(file))
}

/// Writes `path` through a temp file in the same directory, renamed into place only
/// when `write` succeeds (and made durable: the file and the directory fsynced); on
/// failure nothing is left behind. A bundle, its index or a delta is no secret: the file
/// gets 0666 less the umask (0644 as a rule), so a web server running as another user can
/// serve it from a custom location.
/// The file's own errors (creating, syncing, renaming) name `path`; `write`'s errors are
/// passed on as they are, since they may be about another file (a feed that is missing).
fn write_atomically<T>(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<&mut File>) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    use crate::bundle::durable::{Access, Existing};
    enum Failed {
        File(io::Error),
        Write(anyhow::Error),
    }
    impl From<io::Error> for Failed {
        fn from(e: io::Error) -> Self {
            Failed::File(e)
        }
    }
    crate::bundle::durable::write_with(path, Access::Public, Existing::Replace, |out| {
        write(out).map_err(Failed::Write)
    })
    .map_err(|e| match e {
        Failed::File(e) => anyhow::Error::new(e).context(format!("writing {}", path.display())),
        Failed::Write(e) => e,
    })
}
