//! `relay download` and `relay upload`: the `twistcli intelligence download|upload` jobs,
//! with the flag names operators know (`--address`, `--token`, `--user`, `--password`,
//! `--tlscacert`).

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use super::Outcome;
use crate::bundle::{self, Limits, Timestamp, TrustStore};
use crate::client::{
    Credential, Endpoint, FetchLimits, HeldFile, ProxySettings, Secret, SegmentFetch, download,
    fetch_by_segments,
};

/// How to reach a relay or a bundle URL.
#[derive(Debug, Args)]
pub struct Address {
    /// A relay (`https://host:8083`): its API is used. Any other URL with a path
    /// (`https://files.example/intel/bundle.tar.gz`) is fetched as a plain bundle file.
    #[arg(long, value_name = "URL")]
    pub address: String,
    /// Access token (Authorization: Bearer).
    #[arg(
        long,
        value_name = "TOKEN",
        env = "RELAY_TOKEN",
        hide_env_values = true,
        conflicts_with = "user"
    )]
    pub token: Option<String>,
    /// Basic-auth user.
    #[arg(long, value_name = "USER", requires = "password")]
    pub user: Option<String>,
    /// Basic-auth password.
    #[arg(
        long,
        value_name = "PASSWORD",
        env = "RELAY_PASSWORD",
        hide_env_values = true
    )]
    pub password: Option<String>,
    /// CA certificate(s) (PEM) to trust instead of the system's.
    #[arg(long, value_name = "PEM")]
    pub tlscacert: Option<PathBuf>,
    /// The server's public key, pinned: `sha256//BASE64` (as curl's --pinnedpubkey) or
    /// `sha256:HEX`, several separated by `;`. Alone, it trusts a self-signed certificate
    /// with that key.
    #[arg(long, value_name = "PIN")]
    pub ca_pin: Option<crate::client::tls::KeyPins>,
    /// HTTP(S) proxy (default: HTTPS_PROXY / NO_PROXY from the environment).
    #[arg(long, value_name = "URL")]
    pub proxy: Option<String>,
}

impl Address {
    pub(crate) fn endpoint(&self) -> Endpoint {
        let mut e = Endpoint::new(&self.address);
        e.ca_setting = "--tlscacert";
        e.credential = match (&self.token, &self.user, &self.password) {
            (Some(t), _, _) => Credential::Bearer(Secret::new(t.clone())),
            (None, Some(u), Some(p)) => Credential::Basic {
                user: u.clone(),
                password: Secret::new(p.clone()),
            },
            _ => Credential::None,
        };
        e.ca = self.tlscacert.clone();
        e.ca_pin = self.ca_pin.clone();
        e.proxy = self.proxy.as_ref().map(|url| ProxySettings {
            url: url.clone(),
            user: None,
            password: None,
            ca: None,
        });
        e
    }

    /// A relay's base URL has no path; anything else names a file.
    fn is_relay(&self) -> bool {
        let rest = self
            .address
            .split_once("://")
            .map_or(self.address.as_str(), |(_, r)| r);
        rest.split_once('/').is_none_or(|(_, path)| path.is_empty())
    }
}

#[derive(Debug, Args)]
pub struct DownloadArgs {
    #[command(flatten)]
    pub address: Address,
    /// Output file [default: intel_bundle_<sequence>.tar.gz]. A cut download resumes from
    /// `<output>.part` when run again.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Verify the bundle with these public keys; exit 1 if it does not verify.
    #[arg(long, value_name = "KEY", value_delimiter = ',')]
    pub trust: Vec<PathBuf>,
    /// Largest bundle accepted, in bytes.
    #[arg(long, default_value_t = 2 << 30)]
    pub max_bytes: u64,
    /// An earlier bundle held here: fetch only the segments of the new one it does not
    /// have (its index from the relay, or from `<URL>.idx` beside a plain bundle file),
    /// with range requests, and build the new file beside it; the whole file when that
    /// is not possible or would cost more. PREVIOUS.idx is used if it is there.
    #[arg(long, value_name = "PREVIOUS")]
    pub from: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct UploadArgs {
    /// The bundle (or, with --archive, the vendor archive) to upload.
    pub file: PathBuf,
    #[command(flatten)]
    pub address: Address,
    /// Upload a vendor archive (opaque, unsigned, e.g. from `twistcli intelligence
    /// download`) under this configured name instead of a signed bundle.
    #[arg(long, value_name = "NAME")]
    pub archive: Option<String>,
    /// With --archive: the SHA-256 the archive must have (the relay refuses it
    /// otherwise). Required, since an archive is not signed: its digest, taken from where
    /// it was made, is all that ties it to its maker.
    #[arg(long, value_name = "HEX", requires = "archive")]
    pub sha256: Option<String>,
    /// With --archive: upload without a digest to check (integrity checks only).
    #[arg(long, requires = "archive", conflicts_with = "sha256")]
    pub no_digest: bool,
}

pub fn download_cmd(args: DownloadArgs) -> anyhow::Result<Outcome> {
    let runtime = super::runtime()?;
    runtime.block_on(download_async(args))
}

async fn download_async(args: DownloadArgs) -> anyhow::Result<Outcome> {
    let endpoint = args.address.endpoint();
    let client = endpoint.client()?;
    let (url, sequence, index_url, expected) = if args.address.is_relay() {
        let url = format!("{}/api/v1/feeds/manifest", endpoint.base());
        let response = endpoint
            .authorize(client.get(&url))
            .send()
            .await
            .map_err(|e| crate::client::SyncError::transport_with(&url, &e, "--tlscacert"))?;
        if !response.status().is_success() {
            return Err(crate::client::SyncError::status(&url, &response).into());
        }
        let doc: serde_json::Value = response
            .json()
            .await
            .with_context(|| format!("{url}: not a manifest document"))?;
        let sha = doc["bundle"]["sha256"]
            .as_str()
            .context("manifest document without bundle.sha256")?;
        let bundle_url = format!("{}/api/v1/bundles/{sha}", endpoint.base());
        (
            bundle_url.clone(),
            doc["sequence"].as_u64(),
            format!("{bundle_url}/index"),
            sha.parse::<bundle::Sha256>().ok(),
        )
    } else {
        let url = endpoint.url.clone();
        let index_url = format!("{url}.idx");
        (url, None, index_url, None)
    };
    let output = match (&args.output, sequence) {
        (Some(o), _) => o.clone(),
        (None, Some(seq)) => PathBuf::from(format!("intel_bundle_{seq}.tar.gz")),
        (None, None) => PathBuf::from("intel_bundle.tar.gz"),
    };
    let partial = PathBuf::from(format!("{}.part", output.display()));
    let bar = progress_bar();
    let limits = FetchLimits {
        max_bytes: args.max_bytes,
        ..FetchLimits::default()
    };
    let built = match &args.from {
        Some(previous) => {
            by_segments(
                &endpoint,
                &client,
                &url,
                &index_url,
                expected.as_ref(),
                previous,
                &partial,
                limits,
            )
            .await?
        }
        None => None,
    };
    let (fetched, new_index) = match built {
        Some((fetched, index)) => (fetched, Some(index)),
        None => (
            download(
                &endpoint,
                &client,
                &url,
                &partial,
                None,
                limits,
                |done, total| {
                    if let Some(t) = total {
                        bar.set_length(t);
                    }
                    bar.set_position(done);
                },
            )
            .await?
            .context("the server answered 304 to an unconditional request")?,
            None,
        ),
    };
    bar.finish_and_clear();

    let outcome = if args.trust.is_empty() {
        eprintln!("warning: not verified (give --trust KEY to verify the signature and contents)");
        Outcome::Success
    } else {
        let trust = TrustStore::load(&args.trust)?;
        let file = std::fs::File::open(&fetched.path)?;
        match bundle::verify(
            std::io::BufReader::new(file),
            &trust,
            &Limits::default(),
            Timestamp::now(),
            None,
        ) {
            Ok(v) => {
                eprintln!("verified: {}", v.summary());
                Outcome::Success
            }
            Err(e) => {
                crate::outln!("FAILED {}: {e}", url)?;
                eprintln!("hint: {}", e.next_step());
                let _ = std::fs::remove_file(&fetched.path);
                let _ = std::fs::remove_file(partial.with_extension("etag"));
                return Ok(Outcome::CheckFailed);
            }
        }
    };
    let output = match (sequence, &args.output) {
        // A plain URL: name the file after the sequence inside, once it is known.
        (None, None) => bundle::inspect(std::fs::File::open(&fetched.path)?, &Limits::default())
            .map(|(m, _)| PathBuf::from(format!("intel_bundle_{}.tar.gz", m.sequence)))
            .unwrap_or(output),
        _ => output,
    };
    std::fs::rename(&fetched.path, &output)
        .with_context(|| format!("writing {}", output.display()))?;
    let _ = std::fs::remove_file(partial.with_extension("etag"));
    // The new bundle's index beside it, for the next `--from`.
    let index_path = bundle::index::sidecar_path(&output);
    match &new_index {
        Some(index) => std::fs::write(&index_path, index.encode())
            .with_context(|| format!("writing {}", index_path.display()))?,
        None => {
            let _ = std::fs::remove_file(&index_path);
        }
    }
    crate::outln!(
        "{} ({} bytes, {} transferred)",
        output.display(),
        fetched.size,
        fetched.transferred
    )?;
    Ok(outcome)
}

/// `--from PREVIOUS`: the new bundle built from PREVIOUS's segments and fetched ones, or
/// `None` (and why, on stderr) to download the whole file.
#[allow(clippy::too_many_arguments)]
async fn by_segments(
    endpoint: &Endpoint,
    client: &reqwest::Client,
    url: &str,
    index_url: &str,
    expected: Option<&bundle::Sha256>,
    previous: &std::path::Path,
    partial: &std::path::Path,
    limits: FetchLimits,
) -> anyhow::Result<Option<(crate::client::Fetched, bundle::index::SegmentIndex)>> {
    let held_index = {
        let path = previous.to_owned();
        tokio::task::spawn_blocking(move || bundle::index::of_file(&path))
            .await?
            .with_context(|| format!("--from {}", previous.display()))?
    };
    let Some(held_index) = held_index else {
        eprintln!(
            "whole file: {} has no segments to build from (not made by this builder)",
            previous.display()
        );
        return Ok(None);
    };
    let held = HeldFile {
        path: previous,
        index: &held_index,
    };
    // A relay computes deltas between what it holds; a plain location may have one
    // published beside the bundle.
    let delta_url = if url.contains("/api/v1/bundles/") {
        format!("{url}/delta/{}", held_index.bundle_sha256)
    } else {
        bundle::delta::sidecar_url(url, &held_index.bundle_sha256)
    };
    let remote = crate::client::Remote {
        endpoint,
        client,
        bundle_url: url,
        delta_url: Some(&delta_url),
    };
    let built = fetch_by_segments(remote, index_url, expected, Some(held), partial, limits).await?;
    match built {
        SegmentFetch::Built { stats, index } => {
            // The file is what the index says, byte for byte, before anything else looks.
            let sha = {
                let path = partial.to_owned();
                tokio::task::spawn_blocking(move || -> std::io::Result<bundle::Sha256> {
                    let mut sink = bundle::HashingSink::default();
                    std::io::copy(&mut std::fs::File::open(path)?, &mut sink)?;
                    Ok(sink.finish())
                })
                .await??
            };
            if sha != index.bundle_sha256 {
                let _ = std::fs::remove_file(partial);
                eprintln!("whole file: the file built from segments is not the one indexed");
                return Ok(None);
            }
            eprintln!(
                "built from segments: {} of {} bytes transferred ({:.1} %: index {}, delta {} rebuilding {}, ranges {} in {} requests), {} reused from {}",
                stats.transferred(),
                stats.bundle_size,
                100.0 * stats.transferred() as f64 / stats.bundle_size.max(1) as f64,
                stats.index_bytes,
                stats.delta_bytes,
                stats.rebuilt_bytes,
                stats.fetched_bytes - stats.delta_bytes,
                stats.requests - 1 - u64::from(stats.delta_bytes > 0),
                stats.reused_bytes,
                previous.display()
            );
            Ok(Some((
                crate::client::Fetched {
                    path: partial.to_owned(),
                    size: stats.bundle_size,
                    etag: None,
                    transferred: stats.transferred(),
                },
                *index,
            )))
        }
        SegmentFetch::Whole { reason, spent } => {
            eprintln!("whole file: {reason} ({spent} bytes spent finding out)");
            Ok(None)
        }
    }
}

pub fn upload_cmd(args: UploadArgs) -> anyhow::Result<Outcome> {
    let runtime = super::runtime()?;
    if args.archive.is_some() && args.sha256.is_none() && !args.no_digest {
        anyhow::bail!(
            "--archive needs --sha256 HEX (the digest published with the archive), or \
             --no-digest to upload it checked for integrity only"
        );
    }
    runtime.block_on(async move {
        let endpoint = args.address.endpoint();
        let client = endpoint.client()?;
        let url = match &args.archive {
            Some(name) => {
                // The name is the operator's text: one path segment, percent-encoded.
                let mut url = reqwest::Url::parse(endpoint.base())
                    .with_context(|| format!("--address {}", endpoint.base()))?;
                url.path_segments_mut()
                    .map_err(|()| anyhow::anyhow!("--address cannot take a path"))?
                    .pop_if_empty()
                    .extend(["api", "v1", "archives", name]);
                url.to_string()
            }
            None => format!("{}/api/v1/feeds/bundle", endpoint.base()),
        };
        // Streamed from the file: a 300 MB bundle costs the client its buffers, not 300 MB.
        let file = tokio::fs::File::open(&args.file)
            .await
            .with_context(|| format!("reading {}", args.file.display()))?;
        let size = file
            .metadata()
            .await
            .with_context(|| format!("reading {}", args.file.display()))?
            .len();
        let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::with_capacity(
            file,
            256 << 10,
        ));
        let mut request = endpoint
            .authorize(client.put(&url))
            .header(reqwest::header::CONTENT_TYPE, "application/gzip");
        if let Some(sha) = &args.sha256 {
            request = request.header("x-expected-sha256", sha);
        }
        let response = request
            .header(reqwest::header::CONTENT_LENGTH, size)
            .body(body)
            .send()
            .await
            .map_err(|e| crate::client::SyncError::transport_with(&url, &e, "--tlscacert"))?;
        let status = response.status();
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        match status.as_u16() {
            201 if args.archive.is_some() => {
                crate::outln!(
                    "uploaded archive {} ({}, {} entries; NOT SIGNED: integrity checked only)",
                    body["name"].as_str().unwrap_or("?"),
                    body["sha256"].as_str().unwrap_or("?"),
                    body["entries"]
                )?;
                Ok(Outcome::Success)
            }
            201 => {
                crate::outln!(
                    "uploaded: sequence {} ({})",
                    body["sequence"],
                    body["bundle"]["sha256"].as_str().unwrap_or("?")
                )?;
                Ok(Outcome::Success)
            }
            409 | 413 | 422 => {
                let reason = body["error"].as_str().unwrap_or("no reason given");
                crate::outln!("refused ({status}): {reason}")?;
                if let Some(hint) = refusal_hint(status.as_u16(), reason) {
                    crate::outln!("  hint: {hint}")?;
                }
                Ok(Outcome::CheckFailed)
            }
            _ => Err(crate::client::SyncError::new(
                crate::client::FailureKind::of_status(status.as_u16()),
                format!(
                    "{url}: HTTP {status}: {}",
                    body["error"].as_str().unwrap_or("")
                ),
            )
            .into()),
        }
    })
}

/// What to do about an upload the relay refused, when there is one thing to do.
fn refusal_hint(status: u16, reason: &str) -> Option<&'static str> {
    match status {
        409 => Some(
            "the relay holds this sequence or a newer one: build the bundle with a higher \
             --sequence (after a stolen key: relay trust reset-sequence)",
        ),
        413 => Some("larger than the relay's [storage] max_upload_bytes or its [limits] allow"),
        422 if reason.contains("not trusted") => Some(
            "list the signer's public key under [trust] keys in the relay's config, then \
             reload it (kill -HUP)",
        ),
        _ => None,
    }
}

#[derive(Debug, clap::Subcommand)]
pub enum SyncCommand {
    /// Check the relay's sources at once (PUT /api/v1/feeds/force-refresh).
    Now {
        #[command(flatten)]
        address: Address,
    },
}

pub fn sync_cmd(cmd: SyncCommand) -> anyhow::Result<Outcome> {
    let SyncCommand::Now { address } = cmd;
    let runtime = super::runtime()?;
    runtime.block_on(async move {
        let endpoint = address.endpoint();
        let client = endpoint.client()?;
        let url = format!("{}/api/v1/feeds/force-refresh", endpoint.base());
        let response = endpoint
            .authorize(client.put(&url))
            .send()
            .await
            .map_err(|e| crate::client::SyncError::transport_with(&url, &e, "--tlscacert"))?;
        if response.status().as_u16() != 202 {
            return Err(crate::client::SyncError::status(&url, &response).into());
        }
        crate::outln!("check requested; see {}/api/v1/status", endpoint.base())?;
        Ok(Outcome::Success)
    })
}

fn progress_bar() -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(0);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    ) {
        bar.set_style(style);
    }
    bar
}
