//! `relay status` (a relay's state, and its supervisors as a fleet table) and `relay
//! projects push` ("update now": check the sources and push to the supervisors at once).

use anyhow::Context;
use clap::{Args, Subcommand};

use super::Outcome;
use super::transfer::Address;
use crate::client::SyncError;

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub address: Address,
    /// Print the relay's status document as it is (JSON).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum ProjectsCommand {
    /// Check the sources and push the current bundle to the supervisors now (admin).
    Push {
        #[command(flatten)]
        address: Address,
        /// Only this supervisor.
        #[arg(long, value_name = "NAME")]
        supervisor: Option<String>,
    },
}

/// `relay status`: exit 0 when the relay holds a fresh bundle and no supervisor is behind.
pub fn status_cmd(args: StatusArgs) -> anyhow::Result<Outcome> {
    super::runtime()?.block_on(async move {
        let endpoint = args.address.endpoint();
        let client = endpoint.client()?;
        let url = format!("{}/api/v1/status", endpoint.base());
        let response = endpoint
            .authorize(client.get(&url))
            .send()
            .await
            .map_err(|e| SyncError::transport_with(&url, &e, "--tlscacert"))?;
        if !response.status().is_success() {
            return Err(SyncError::status(&url, &response).into());
        }
        let status: serde_json::Value = response
            .json()
            .await
            .with_context(|| format!("{url}: not a status document"))?;
        if args.json {
            crate::outln!("{}", serde_json::to_string_pretty(&status)?)?;
        } else {
            crate::out!("{}", render(&status))?;
        }
        let fresh = status["current"]["freshness"] == "ok";
        let fleet_ok = status["supervisors_behind"].as_u64().unwrap_or(0) == 0;
        Ok(if fresh && fleet_ok {
            Outcome::Success
        } else {
            Outcome::CheckFailed
        })
    })
}

/// The status document as the lines an operator reads.
fn render(s: &serde_json::Value) -> String {
    let text = |v: &serde_json::Value| match v {
        serde_json::Value::Null => "-".to_owned(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let mut out = String::new();
    let c = &s["current"];
    if c.is_null() {
        out += "current bundle: none yet\n";
    } else {
        out += &format!(
            "current bundle: sequence {} from {} ({}), created {}, freshness {}\n",
            text(&c["sequence"]),
            text(&c["origin"]),
            text(&c["source"]),
            text(&c["created"]),
            text(&c["freshness"]),
        );
    }
    out += &format!(
        "last check: {}; next check: {}; last error: {}\n",
        text(&s["last_check"]),
        text(&s["next_check"]),
        text(&s["last_error"]),
    );
    if let Some(fleet) = s["supervisors"].as_array().filter(|f| !f.is_empty()) {
        out += &format!(
            "supervisors: {} of {} behind\n",
            text(&s["supervisors_behind"]),
            fleet.len()
        );
        out += &format!(
            "  {:<16} {:>9} {:<8} {:<26} {}\n",
            "NAME", "SEQUENCE", "STATE", "LAST SUCCESS", "LAST ERROR"
        );
        for sup in fleet {
            let state = if sup["behind"] == true {
                "behind"
            } else {
                "current"
            };
            let error = if sup["last_error"].is_null() {
                "-".to_owned()
            } else {
                format!(
                    "{}: {} (next attempt {})",
                    text(&sup["last_error_kind"]),
                    text(&sup["last_error"]),
                    text(&sup["next_attempt"])
                )
            };
            out += &format!(
                "  {:<16} {:>9} {:<8} {:<26} {}\n",
                text(&sup["name"]),
                text(&sup["sequence"]),
                state,
                text(&sup["last_success"]),
                error
            );
        }
    }
    out
}

pub fn projects_cmd(cmd: ProjectsCommand) -> anyhow::Result<Outcome> {
    let ProjectsCommand::Push {
        address,
        supervisor,
    } = cmd;
    super::runtime()?.block_on(async move {
        let endpoint = address.endpoint();
        let client = endpoint.client()?;
        let mut url = format!("{}/api/v1/projects/push", endpoint.base());
        if let Some(name) = &supervisor {
            url = format!("{url}?supervisor={name}");
        }
        let response = endpoint
            .authorize(client.post(&url))
            .send()
            .await
            .map_err(|e| SyncError::transport_with(&url, &e, "--tlscacert"))?;
        match response.status().as_u16() {
            202 => {
                let body: serde_json::Value = response.json().await.unwrap_or_default();
                crate::outln!(
                    "push requested for {}; see {}/api/v1/status",
                    body["supervisors"],
                    endpoint.base()
                )?;
                Ok(Outcome::Success)
            }
            404 => {
                let body: serde_json::Value = response.json().await.unwrap_or_default();
                match (supervisor.as_deref(), body["error"].as_str()) {
                    (Some(name), Some("no such supervisor configured") | None) => {
                        crate::outln!("no supervisor named {name}")?
                    }
                    (_, Some(reason)) => crate::outln!("{reason}")?,
                    (None, None) => crate::outln!("the relay has no supervisor to push to")?,
                }
                Ok(Outcome::CheckFailed)
            }
            _ => Err(SyncError::status(&url, &response).into()),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::render;

    #[test]
    fn the_fleet_is_a_table_with_the_reason_a_supervisor_is_behind() {
        let status = serde_json::json!({
            "current": {"sequence": 7, "origin": "o", "source": "upload by a",
                        "created": "2026-11-22T00:00:00Z", "freshness": "ok"},
            "supervisors_behind": 1,
            "supervisors": [
                {"name": "east", "sequence": 7, "behind": false,
                 "last_success": "2026-11-22T00:01:00Z", "last_error": null},
                {"name": "west", "sequence": 6, "behind": true, "last_success": null,
                 "last_error": "HTTP 401", "last_error_kind": "auth",
                 "next_attempt": "2026-11-22T00:02:00Z"},
            ]
        });
        let text = render(&status);
        assert!(text.contains("supervisors: 1 of 2 behind"), "{text}");
        let west = text.lines().find(|l| l.contains("west")).unwrap();
        assert!(
            west.contains("behind") && west.contains("auth: HTTP 401"),
            "{text}"
        );
        let east = text.lines().find(|l| l.contains("east")).unwrap();
        assert!(east.contains("current"), "{text}");
    }
}
