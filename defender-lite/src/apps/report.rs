//! What `examine` reports, as people read it (`table`) and as `--format json` writes it
//! (the module docs give the schema): the report, each app, each port and its evidence.

use super::Found;
use relay::bundle::PortProtocol;
use serde::Serialize;

/// Which command line the image runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandLine {
    /// Its `Entrypoint` and `Cmd` (a `docker save` archive), if any.
    FromImage,
    /// Given by hand (`--cmd`), already split into words.
    Given(Vec<String>),
}

/// What `examine` found in one image.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub image: String,
    pub image_kind: &'static str,
    pub knowledge: String,
    pub command: Option<Command>,
    pub apps: Vec<AppReport>,
    pub exposed: Vec<Exposed>,
    pub problems: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Command {
    /// `image` or `cmd`.
    pub from: &'static str,
    pub argv: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct AppReport {
    pub id: String,
    pub name: String,
    pub found: Vec<Found>,
    /// The words that start the app, from its executable on.
    pub runs: Option<Vec<String>>,
    /// Config files read, in reading order.
    pub configs: Vec<String>,
    pub ports: Vec<Port>,
    pub notes: Vec<String>,
    pub problems: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Port {
    pub port: Option<u16>,
    pub protocol: PortProtocol,
    pub address: Option<String>,
    pub label: Option<String>,
    pub status: Status,
    pub evidence: Evidence,
    pub condition: Option<String>,
    pub context: Option<String>,
    /// The text as written, for an unresolved port.
    pub value: Option<String>,
    /// What wins over an overridden port: `argv --port 7777` or `path:line`.
    pub overridden_by: Option<String>,
    pub exposed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Listens,
    Conditional,
    Overridden,
    Unresolved,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Listens => "listens",
            Status::Conditional => "conditional",
            Status::Overridden => "overridden",
            Status::Unresolved => "unresolved",
        }
    }
}

/// Where a port comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Evidence {
    File { path: String, line: usize },
    Argv { arg: String },
    Default { commented: Option<String> },
    Expose { text: String },
}

impl std::fmt::Display for Evidence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Evidence::File { path, line } => write!(f, "{path}:{line}"),
            Evidence::Argv { arg } => write!(f, "argv {arg}"),
            Evidence::Default {
                commented: Some(at),
            } => write!(f, "default (commented out at {at})"),
            Evidence::Default { commented: None } => write!(f, "default"),
            Evidence::Expose { text } => write!(f, "EXPOSE {text}"),
        }
    }
}

/// A port of the image's `EXPOSE`, with the apps found listening on it.
#[derive(Debug, Clone, Serialize)]
pub struct Exposed {
    pub port: u16,
    pub protocol: PortProtocol,
    pub evidence: Evidence,
    pub apps: Vec<String>,
}
