//! `relay origin run`: ask a running origin relay to run one cycle now (fetch, import,
//! build, sign, publish) and print what it did. The work is `server::origin`'s.

use anyhow::Context;
use clap::Subcommand;

use super::Outcome;
use super::transfer::Address;

#[derive(Debug, Subcommand)]
pub enum OriginCommand {
    /// Run one origin cycle now and wait for it (POST /api/v1/origin/run, an admin's
    /// credential). Exit 0 when it published or found nothing new, 1 when it failed.
    Run {
        #[command(flatten)]
        address: Address,
    },
}

pub fn run(cmd: OriginCommand) -> anyhow::Result<Outcome> {
    let OriginCommand::Run { address } = cmd;
    let runtime = super::runtime()?;
    runtime.block_on(async move {
        let mut endpoint = address.endpoint();
        // A cycle imports and builds real-size feeds: minutes, not the usual 30 s.
        endpoint.request_timeout = std::time::Duration::from_secs(3600);
        let client = endpoint.client()?;
        let url = format!("{}/api/v1/origin/run", endpoint.base());
        let response = endpoint
            .authorize(client.post(&url))
            .send()
            .await
            .map_err(|e| crate::client::SyncError::transport_with(&url, &e, "--tlscacert"))?;
        let code = response.status().as_u16();
        if code != 200 && code != 500 {
            return Err(crate::client::SyncError::status(&url, &response).into());
        }
        let report: serde_json::Value = response
            .json()
            .await
            .with_context(|| format!("{url}: the answer is not a cycle report"))?;
        print_report(&report)?;
        Ok(if report["outcome"] == "failed" {
            Outcome::CheckFailed
        } else {
            Outcome::Success
        })
    })
}

fn print_report(report: &serde_json::Value) -> std::io::Result<()> {
    let outcome = report["outcome"].as_str().unwrap_or("?");
    match outcome {
        "published" => crate::outln!(
            "published sequence {} (sha256 {})",
            report["sequence"],
            report["sha256"].as_str().unwrap_or("?")
        ),
        "unchanged" => crate::outln!("unchanged: no input changed, nothing new published"),
        _ => crate::outln!(
            "failed: {}",
            report["error"].as_str().unwrap_or("(no reason given)")
        ),
    }?;
    for input in report["inputs"].as_array().into_iter().flatten() {
        let text = |k: &str| input[k].as_str().unwrap_or("-").to_owned();
        let counts = &input["counts"];
        let counts = if counts.is_object() {
            format!(
                "read {}, kept {}, merged {}, withdrawn {}, refused {}",
                counts["read"],
                counts["kept"],
                counts["merged"],
                counts["withdrawn"],
                counts["refused"]
            )
        } else {
            "no data yet".to_owned()
        };
        crate::outln!(
            "  {:<16} {:<8} {}  retrieved {}",
            text("name"),
            text("kind"),
            counts,
            text("retrieved")
        )?;
        if let Some(error) = input["last_error"].as_str() {
            crate::outln!("    last error: {error}")?;
        }
    }
    Ok(())
}
