//! `defender-lite model ...`: the operator's view of the models in the runtime database
//! (`<data_dir>/runtime.sled`, written by `monitor`). It lets one process open it at a
//! time, so while the monitor runs this command stops at once with a message that says
//! so (`defense::store::StoreError::Locked`) instead of waiting.

use std::path::PathBuf;

use anyhow::Context;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::{DEFAULT_CONFIG, Outcome};
use crate::config::Config;
use crate::defense::Proto;
use crate::defense::model::{List, Model, ModelState, ModelStore, Origin};
use crate::defense::rules::PortRange;
use crate::defense::runner::parse_duration;
use crate::defense::store::RuntimeDb;

/// Arguments of `defender-lite model`.
#[derive(Debug, clap::Args)]
pub struct ModelArgs {
    #[arg(long, value_name = "FILE", default_value = DEFAULT_CONFIG, global = true)]
    pub config: PathBuf,
    #[command(subcommand)]
    pub command: ModelCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum ModelCommand {
    /// Every model: image (`host` for processes outside containers), state, entry counts.
    List {
        #[arg(long)]
        json: bool,
    },
    /// One model's entries, each learned or added by hand.
    Show {
        image: String,
        #[arg(long)]
        json: bool,
    },
    /// End the learning period now: the model is enforced from the next event.
    Promote { image: String },
    /// Forget the learned entries (those added by hand stay) and learn again for the
    /// learning period (monitor.learning, or --learning).
    Relearn {
        image: String,
        #[arg(long, value_name = "DURATION")]
        learning: Option<String>,
    },
    /// Add entries by hand: they are never forgotten by relearn. A model that does not
    /// exist yet is created, learning from now.
    Add {
        image: String,
        /// An executable path (`/usr/sbin/nginx`).
        #[arg(long = "process", value_name = "PATH")]
        processes: Vec<String>,
        /// A listening port, `PORT/PROTO` (`8080/tcp`; tcp when the protocol is left out).
        #[arg(long = "listen", value_name = "PORT/PROTO")]
        listening: Vec<String>,
        /// An outbound port, `PORT/PROTO`.
        #[arg(long = "outbound-port", value_name = "PORT/PROTO")]
        outbound_ports: Vec<String>,
        /// A DNS name the image may look up.
        #[arg(long = "dns", value_name = "NAME")]
        dns: Vec<String>,
    },
}

pub fn run(args: ModelArgs) -> anyhow::Result<Outcome> {
    let config = Config::load(&args.config)?;
    let db = RuntimeDb::open(&config.data_dir)?;
    let store = ModelStore::open(&db)?;
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let get = |image: &str| -> anyhow::Result<Model> {
        match store.get(image)? {
            Some(m) => Ok(m),
            None => {
                let known: Vec<String> = store.all()?.into_iter().map(|m| m.image).collect();
                anyhow::bail!(
                    "no model for image {image:?}; models: {}",
                    if known.is_empty() {
                        "none yet".to_owned()
                    } else {
                        known.join(", ")
                    }
                )
            }
        }
    };
    match args.command {
        ModelCommand::List { json } => {
            let models = store.all()?;
            if json {
                super::outln(format_args!("{}", serde_json::to_string_pretty(&models)?))?;
            } else {
                super::out(format_args!("{}", table(&models, now)))?;
            }
        }
        ModelCommand::Show { image, json } => {
            let m = get(&image)?;
            if json {
                super::outln(format_args!("{}", serde_json::to_string_pretty(&m)?))?;
            } else {
                super::out(format_args!("{}", show(&m, now)))?;
            }
        }
        ModelCommand::Promote { image } => {
            let mut m = get(&image)?;
            m.state = ModelState::Active;
            store.save(&m)?;
            super::outln(format_args!(
                "model {image}: active (learning ended by hand)"
            ))?;
        }
        ModelCommand::Relearn { image, learning } => {
            let learning = match learning {
                Some(text) => parse_duration(&text).context("--learning")?,
                None => config.monitor.learning.0,
            };
            let secs = i64::try_from(learning.as_secs()).unwrap_or(i64::MAX);
            let mut m = get(&image)?;
            m.relearn(now, secs);
            store.save(&m)?;
            super::outln(format_args!(
                "model {image}: learning again until {} (learned entries forgotten, {} added by hand kept)",
                time_text(now.saturating_add(secs)),
                count(&m, Some(Origin::User))
            ))?;
        }
        ModelCommand::Add {
            image,
            processes,
            listening,
            outbound_ports,
            dns,
        } => {
            let mut entries = Vec::new();
            for p in processes {
                if !p.starts_with('/') {
                    anyhow::bail!("--process {p:?}: give the executable's absolute path");
                }
                entries.push((List::Processes, p));
            }
            for p in listening {
                entries.push((List::Listening, port_key(&p).context("--listen")?));
            }
            for p in outbound_ports {
                entries.push((
                    List::OutboundPorts,
                    port_key(&p).context("--outbound-port")?,
                ));
            }
            for d in dns {
                let name = d.trim().trim_end_matches('.').to_ascii_lowercase();
                anyhow::ensure!(
                    !name.is_empty()
                        && name
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')),
                    "--dns {d:?}: not a domain name"
                );
                entries.push((List::Dns, name));
            }
            if entries.is_empty() {
                anyhow::bail!("nothing to add: give --process, --listen, --outbound-port or --dns");
            }
            let mut m = match store.get(&image)? {
                Some(m) => m,
                None => {
                    let secs =
                        i64::try_from(config.monitor.learning.0.as_secs()).unwrap_or(i64::MAX);
                    super::outln(format_args!("model {image}: created, learning from now"))?;
                    Model::new(&image, now, secs)
                }
            };
            for (list, value) in &entries {
                m.add(*list, value, Origin::User);
                super::outln(format_args!(
                    "model {image}: {} {value} (user)",
                    list_name(*list)
                ))?;
            }
            store.save(&m)?;
        }
    }
    db.flush()?;
    Ok(Outcome::Success)
}

/// `8080/tcp` or `8080` (tcp) as a model key (`tcp/8080`).
fn port_key(text: &str) -> anyhow::Result<String> {
    let text = if text.contains('/') {
        text.to_owned()
    } else {
        format!("{text}/tcp")
    };
    let r = PortRange::parse(&text).map_err(anyhow::Error::msg)?;
    anyhow::ensure!(r.low == r.high, "{text:?}: one port, not a range");
    let proto = r.proto.unwrap_or(Proto::Tcp);
    Ok(format!("{}/{}", proto.as_str(), r.low))
}

fn list_name(list: List) -> &'static str {
    match list {
        List::Processes => "process",
        List::Listening => "listening",
        List::OutboundPorts => "outbound port",
        List::OutboundIps => "outbound ip",
        List::Dns => "dns",
    }
}

fn count(m: &Model, origin: Option<Origin>) -> usize {
    List::ALL
        .iter()
        .map(|l| {
            m.list(*l)
                .values()
                .filter(|o| origin.is_none_or(|want| **o == want))
                .count()
        })
        .sum()
}

fn time_text(secs: i64) -> String {
    OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| format!("@{secs}"))
}

fn state_text(m: &Model, now: i64) -> String {
    match m.state {
        ModelState::Learning { until } if now < until => {
            format!("learning until {}", time_text(until))
        }
        // Its period passed; the monitor makes it active on the next event.
        ModelState::Learning { .. } => "active".to_owned(),
        ModelState::Active => "active".to_owned(),
    }
}

fn table(models: &[Model], now: i64) -> String {
    let mut rows = vec![[
        "IMAGE".to_owned(),
        "STATE".to_owned(),
        "PROCESSES".to_owned(),
        "LISTENING".to_owned(),
        "OUTBOUND".to_owned(),
        "DNS".to_owned(),
        "USER".to_owned(),
    ]];
    for m in models {
        rows.push([
            m.image.clone(),
            state_text(m, now),
            m.processes.len().to_string(),
            m.listening.len().to_string(),
            (m.outbound_ports.len() + m.outbound_ips.len()).to_string(),
            m.dns.len().to_string(),
            count(m, Some(Origin::User)).to_string(),
        ]);
    }
    let mut widths = [0usize; 7];
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let mut out = String::new();
    for r in &rows {
        let line: Vec<String> = r
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out += line.join("  ").trim_end();
        out.push('\n');
    }
    if models.is_empty() {
        out += "(no models yet: the monitor creates one per image it sees)\n";
    }
    out
}

fn show(m: &Model, now: i64) -> String {
    let mut out = format!(
        "model {}: {}, created {}\n",
        m.image,
        state_text(m, now),
        time_text(m.created)
    );
    for (title, list) in [
        ("processes", List::Processes),
        ("listening", List::Listening),
        ("outbound ports", List::OutboundPorts),
        ("outbound ips", List::OutboundIps),
        ("dns", List::Dns),
    ] {
        let entries = m.list(list);
        out += &format!("{title} ({}):\n", entries.len());
        for (value, origin) in entries {
            let origin = match origin {
                Origin::Learned => "learned",
                Origin::User => "user",
            };
            out += &format!("  {value}  ({origin})\n");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_given_by_hand_become_model_keys() {
        assert_eq!(port_key("8080").unwrap(), "tcp/8080");
        assert_eq!(port_key("53/udp").unwrap(), "udp/53");
        assert!(port_key("80-90/tcp").is_err());
        assert!(port_key("80/sctp").is_err());
    }
}
