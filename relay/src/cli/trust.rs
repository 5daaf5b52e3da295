//! `relay trust reset-sequence`: an admin's explicit, audited reset of a running relay's
//! held sequence (after a signing key published a sequence far ahead). The work is the
//! store's; see README "A signing key was stolen".

use anyhow::Context;
use clap::Subcommand;

use super::Outcome;
use super::transfer::Address;

#[derive(Debug, Subcommand)]
pub enum TrustCommand {
    /// Demote every bundle a relay holds above sequence --to, so a lower sequence is
    /// accepted again (POST /api/v1/admin/reset-sequence, an admin's credential). The
    /// demoted files go to the store's quarantine/; the act is written to its audit log.
    ResetSequence {
        /// Keep held bundles at or below this sequence; demote the rest.
        #[arg(long, value_name = "N")]
        to: u64,
        /// Why: recorded in the audit log with the admin's name.
        #[arg(long, value_name = "TEXT")]
        reason: String,
        #[command(flatten)]
        address: Address,
    },
}

pub fn run(cmd: TrustCommand) -> anyhow::Result<Outcome> {
    let TrustCommand::ResetSequence {
        to,
        reason,
        address,
    } = cmd;
    let runtime = super::runtime()?;
    runtime.block_on(async move {
        let endpoint = address.endpoint();
        let client = endpoint.client()?;
        let url = format!("{}/api/v1/admin/reset-sequence", endpoint.base());
        let response = endpoint
            .authorize(client.post(&url))
            .json(&serde_json::json!({ "to": to, "reason": reason }))
            .send()
            .await
            .map_err(|e| crate::client::SyncError::transport_with(&url, &e, "--tlscacert"))?;
        if response.status().as_u16() != 200 {
            return Err(crate::client::SyncError::status(&url, &response).into());
        }
        let record: serde_json::Value = response
            .json()
            .await
            .with_context(|| format!("{url}: the answer is not an audit record"))?;
        let demoted = record["demoted"].as_array().map_or(0, Vec::len);
        crate::outln!("reset to {to}: {demoted} line(s) of demotion, recorded in the audit log")?;
        for line in record["demoted"].as_array().into_iter().flatten() {
            crate::outln!("  {}", line.as_str().unwrap_or(""))?;
        }
        match record["current"].as_u64() {
            Some(seq) => crate::outln!("current bundle: sequence {seq}"),
            None => crate::outln!("no bundle is current: upload or sync one"),
        }?;
        Ok(Outcome::Success)
    })
}
