//! The JSON documents of a `docker save` archive: `manifest.json` (which config, which
//! layers in which order) and the image config (exposed ports, entrypoint, command,
//! environment, working directory), as lenient serde types: a field that is missing or
//! `null` is `None`, unknown fields are ignored (the format grows).

use std::collections::BTreeMap;

use serde::Deserialize;

/// One image of `manifest.json` (a `docker save` archive holds a list of them).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ManifestItem {
    pub config: String,
    #[serde(default)]
    pub repo_tags: Option<Vec<String>>,
    pub layers: Vec<String>,
}

/// The image config of a `docker save` archive (the OCI / Docker image configuration).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ImageConfig {
    #[serde(default)]
    pub architecture: Option<String>,
    #[serde(default)]
    pub os: Option<String>,
    /// The defaults for containers run from the image. Missing in a config that has none.
    #[serde(default)]
    pub config: Option<ContainerConfig>,
}

/// The `config` object of an image config: what a container of the image runs with.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerConfig {
    #[serde(default)]
    pub user: Option<String>,
    /// Keys such as `"80/tcp"`; the values are empty objects.
    #[serde(default)]
    pub exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
    /// `NAME=value` strings.
    #[serde(default)]
    pub env: Option<Vec<String>>,
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default)]
    pub cmd: Option<Vec<String>>,
    #[serde(default)]
    pub volumes: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(default)]
    pub working_dir: Option<String>,
    #[serde(default)]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub stop_signal: Option<String>,
}

impl ContainerConfig {
    /// The exposed ports as written (`"80/tcp"`, `"53/udp"`), sorted.
    pub fn exposed_ports(&self) -> Vec<&str> {
        self.exposed_ports
            .iter()
            .flat_map(|ports| ports.keys().map(String::as_str))
            .collect()
    }

    /// The value of an environment variable, if the config sets it.
    pub fn env_var(&self, name: &str) -> Option<&str> {
        self.env.iter().flatten().find_map(|pair| {
            let (key, value) = pair.split_once('=')?;
            (key == name).then_some(value)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_docker_config() {
        let text = r#"{"architecture":"amd64","os":"linux","config":{"ExposedPorts":{"80/tcp":{},"443/tcp":{}},
            "Env":["PATH=/usr/bin","NGINX_VERSION=1.25.3"],"Entrypoint":["/docker-entrypoint.sh"],
            "Cmd":["nginx","-g","daemon off;"],"WorkingDir":"","Labels":null,"StopSignal":"SIGQUIT"},
            "rootfs":{"type":"layers","diff_ids":[]}}"#;
        let config: ImageConfig = serde_json::from_str(text).unwrap();
        let container = config.config.unwrap();
        assert_eq!(container.exposed_ports(), ["443/tcp", "80/tcp"]);
        assert_eq!(container.env_var("NGINX_VERSION"), Some("1.25.3"));
        assert_eq!(container.cmd.unwrap()[0], "nginx");
        assert!(container.labels.is_none());
        let manifest: Vec<ManifestItem> = serde_json::from_str(
            r#"[{"Config":"c.json","RepoTags":null,"Layers":["a/layer.tar"]}]"#,
        )
        .unwrap();
        assert_eq!(manifest[0].layers, ["a/layer.tar"]);
    }
}
