//! The `apps` feed schema: how to recognise an app in a filesystem and where its
//! configuration says it listens.
//!
//! One JSON document per app. The schema is declarative so that adding an app is adding
//! data: a config source names a file format the agent already reads (`keyword`, `ini`,
//! `yaml`, `xml`, `nginx`, `apache`) and the keys that hold ports. Every rule that can be
//! is expressed in the types, so a bad document fails to parse with a line and column.
//! Reading the config files is the agent's job, not this module's.

use std::num::NonZeroU16;

use serde::{Deserialize, Serialize};

/// One app's knowledge.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppSpec {
    /// Lower-case `[a-z0-9-]`, equal to the file stem.
    pub id: AppId,
    /// Display name.
    pub name: Text,
    /// Executable basenames or absolute paths whose presence identifies the app.
    pub executables: Vec<Executable>,
    /// Absolute marker paths or globs whose presence identifies the app.
    #[serde(default)]
    pub files: Vec<AbsPattern>,
    /// Where the app's configuration lives and how to read ports from it.
    pub configs: Vec<ConfigSource>,
    /// Command-line flags that override the configuration.
    #[serde(default)]
    pub flags: Vec<FlagSpec>,
    /// Where the facts come from.
    #[serde(default)]
    pub references: Vec<Text>,
}

/// A config source; the extractor fields depend on the file format.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "format", rename_all = "lowercase")]
pub enum ConfigSource {
    /// `directive arg...` lines, `#` comments (redis, haproxy).
    Keyword(DirectiveConfig),
    /// `key = value` lines, optional `[section]` headers, `#`/`;` comments.
    Ini(IniConfig),
    /// YAML; keys are dotted paths, nested and flattened forms both match.
    Yaml(YamlConfig),
    /// XML; ports are attributes of elements.
    Xml(XmlConfig),
    /// nginx directive blocks.
    Nginx(DirectiveConfig),
    /// Apache httpd directives.
    Apache(DirectiveConfig),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectiveConfig {
    pub paths: Vec<AbsPattern>,
    /// Directives whose argument names more config files or directories to read.
    #[serde(default)]
    pub includes: Vec<Word>,
    pub ports: Vec<KeyPort>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IniConfig {
    pub paths: Vec<AbsPattern>,
    #[serde(default)]
    pub includes: Vec<Word>,
    pub ports: Vec<IniPort>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct YamlConfig {
    pub paths: Vec<AbsPattern>,
    pub ports: Vec<KeyPort>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct XmlConfig {
    pub paths: Vec<AbsPattern>,
    pub ports: Vec<XmlPort>,
}

/// A port read from a directive's first argument or a (dotted) key's value: a port, or
/// `host:port`, `[v6]:port`, `*:port`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyPort {
    pub key: Word,
    /// The port used when the key is absent or commented out.
    pub default: Option<NonZeroU16>,
    #[serde(default)]
    pub protocol: PortProtocol,
    pub label: Option<Text>,
}

/// A port read from `key = value` inside one of `sections` (none: outside any section).
/// `key` may use `*` for one dotted segment (`listeners.tcp.*`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IniPort {
    #[serde(default)]
    pub sections: Vec<Word>,
    pub key: Word,
    pub default: Option<NonZeroU16>,
    #[serde(default)]
    pub protocol: PortProtocol,
    pub label: Option<Text>,
}

/// A port read from an attribute of an element.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct XmlPort {
    pub element: Word,
    pub attribute: Word,
    pub default: Option<NonZeroU16>,
    #[serde(default)]
    pub protocol: PortProtocol,
    pub label: Option<Text>,
}

/// A command-line flag that sets a port: `--port 6380`, `--port=6380`, or with `key`,
/// `-E http.port=9201`. `subcommand` limits it to one sub-command or applet; `default`
/// is the port used when the sub-command runs without the flag.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlagSpec {
    pub flag: Flag,
    pub key: Option<Word>,
    pub subcommand: Option<Word>,
    pub default: Option<NonZeroU16>,
    #[serde(default)]
    pub protocol: PortProtocol,
    pub label: Option<Text>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PortProtocol {
    #[default]
    Tcp,
    Udp,
}

/// Defines a string newtype that is checked when deserialized.
macro_rules! checked_string {
    ($(#[$doc:meta])* $name:ident, $check:expr) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = String;

            fn try_from(s: String) -> Result<Self, Self::Error> {
                let check: fn(&str) -> Result<(), String> = $check;
                check(&s).map(|()| Self(s))
            }
        }

        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0
            }
        }
    };
}

checked_string!(
    /// An app id: lower-case `[a-z0-9-]`, 1 to 64 characters.
    AppId,
    |s| {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        ok.then_some(()).ok_or_else(|| format!("app id {s:?} must be 1-64 characters of a-z, 0-9 and -"))
    }
);

checked_string!(
    /// Non-empty text without control characters.
    Text,
    |s| {
        if s.trim().is_empty() {
            return Err("empty text".into());
        }
        if s.chars().any(char::is_control) {
            return Err(format!("control character in {s:?}"));
        }
        Ok(())
    }
);

checked_string!(
    /// A name without white space (a directive, key, section, element).
    Word,
    |s| {
        let ok = !s.is_empty() && s.len() <= 256 && !s.chars().any(|c| c.is_whitespace() || c.is_control());
        ok.then_some(()).ok_or_else(|| format!("{s:?} must be a non-empty name without white space"))
    }
);

checked_string!(
    /// A command-line flag: starts with `-`.
    Flag,
    |s| {
        let ok = s.len() >= 2 && s.starts_with('-') && !s.chars().any(|c| c.is_whitespace() || c == '=');
        ok.then_some(()).ok_or_else(|| format!("flag {s:?} must start with - and hold no white space or ="))
    }
);

checked_string!(
    /// An executable basename (no `/`) or an absolute path.
    Executable,
    |s| {
        if s.starts_with('/') {
            return check_abs_pattern(s);
        }
        let ok = !s.is_empty() && !s.contains('/') && !s.chars().any(|c| c.is_whitespace() || c.is_control());
        ok.then_some(()).ok_or_else(|| format!("executable {s:?} must be a basename or an absolute path"))
    }
);

checked_string!(
    /// An absolute path, possibly a glob (`*`, `?`, `[...]`), without `.` or `..`.
    AbsPattern,
    check_abs_pattern
);

fn check_abs_pattern(s: &str) -> Result<(), String> {
    if !s.starts_with('/') {
        return Err(format!("path {s:?} must be absolute"));
    }
    if s.split('/').any(|c| c == "." || c == "..") {
        return Err(format!("path {s:?} must not contain . or .. components"));
    }
    if s.chars().any(char::is_control) {
        return Err(format!("control character in path {s:?}"));
    }
    glob::Pattern::new(s).map_err(|e| format!("path {s:?} is not a valid glob: {e}"))?;
    Ok(())
}

impl AppSpec {
    /// Rules that span fields: something must identify the app, and something must
    /// give a port.
    pub fn check(&self) -> Result<(), String> {
        if self.executables.is_empty() && self.files.is_empty() {
            return Err(format!(
                "app {}: needs at least one executable or marker file",
                self.id.as_str()
            ));
        }
        if self.configs.is_empty() && self.flags.is_empty() {
            return Err(format!(
                "app {}: needs at least one config source or port flag",
                self.id.as_str()
            ));
        }
        Ok(())
    }
}
