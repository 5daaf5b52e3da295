//! A small Docker Engine API client over the unix socket (`/var/run/docker.sock`):
//! container details for attribution (one container by id, or every running one with its
//! network addresses, for packets that carry no pid), and the two calls "block" (`defense::actions`)
//! makes: set the restart policy, stop, so a blocked container stays down across a daemon
//! restart. `tests/docker_block.rs` drives it against Debian's dockerd (API 1.41); paths
//! carry no version prefix, so the engine answers in its own current version.
//!
//! One HTTP/1.1 connection per request (hyper's low-level client over a tokio
//! `UnixStream`): these calls are rare, and a fresh connection cannot be left in a bad
//! state by an earlier one. Every call has a deadline and a response size cap; the
//! engine's error message is passed on in the error.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1;
use hyper::{Method, Request, StatusCode, header};
use hyper_util::rt::TokioIo;
use serde::Deserialize;

pub const DEFAULT_SOCKET: &str = "/var/run/docker.sock";
/// A container's inspect document is a few KiB; anything near this is not the engine.
const MAX_RESPONSE: usize = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error("docker engine at {socket}: cannot connect: {source}")]
    Connect {
        socket: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("docker engine: HTTP exchange failed: {0}")]
    Http(#[from] hyper::Error),
    #[error("docker engine: no answer within {0:?}")]
    Timeout(Duration),
    #[error("docker engine: {method} {path}: {status}: {message}")]
    Status {
        method: Method,
        path: String,
        status: StatusCode,
        message: String,
    },
    #[error("docker engine: reading the response: {0}")]
    Body(String),
    #[error("docker engine: unexpected response: {0}")]
    Json(#[from] serde_json::Error),
    #[error("not a container id or name: {0:?}")]
    InvalidId(String),
}

/// What the engine says about a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerInfo {
    pub id: String,
    /// Without Docker's leading `/`.
    pub name: String,
    /// The image reference the container was created from (`nginx:1.27`).
    pub image: String,
    /// The image's id (`sha256:...`).
    pub image_id: String,
    pub labels: BTreeMap<String, String>,
    pub running: bool,
    /// The engine's state name: `created`, `running`, `restarting`, `exited`, ...
    pub status: String,
    /// The main process on the host, while running (0 otherwise).
    pub pid: u32,
    /// The restart policy's name as the engine holds it: `no` (or empty, which means the
    /// same), `always`, `unless-stopped`, `on-failure`.
    pub restart_policy: String,
}

/// A running container as the engine lists it, with the addresses it has on its networks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunningContainer {
    pub id: String,
    /// Without Docker's leading `/`.
    pub name: String,
    /// The image reference the container was created from, as `inspect` reports it.
    pub image: String,
    pub labels: BTreeMap<String, String>,
    /// `IPAddress` and `GlobalIPv6Address` of each network the container is attached to.
    /// Empty for `--network host` (the host's addresses), `--network none`, and
    /// `--network container:<other>` (the other container holds the addresses).
    pub addresses: Vec<IpAddr>,
}

/// Docker's restart policies ("block" sets `No` or `UnlessStopped`, then stops).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPolicy {
    No,
    UnlessStopped,
}

#[derive(Debug, Clone)]
pub struct DockerClient {
    socket: PathBuf,
    timeout: Duration,
}

impl Default for DockerClient {
    fn default() -> Self {
        DockerClient::new(DEFAULT_SOCKET)
    }
}

impl DockerClient {
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        DockerClient {
            socket: socket.into(),
            timeout: Duration::from_secs(5),
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// `GET /containers/{id}/json`.
    pub async fn inspect(&self, id: &str) -> Result<ContainerInfo, DockerError> {
        check_id(id)?;
        let body = self
            .call(
                Method::GET,
                &format!("/containers/{id}/json"),
                None,
                self.timeout,
            )
            .await?;
        let raw: Inspect = serde_json::from_slice(&body)?;
        Ok(ContainerInfo {
            id: raw.id,
            name: raw.name.trim_start_matches('/').to_string(),
            image: raw.config.image,
            image_id: raw.image,
            labels: raw.config.labels.unwrap_or_default(),
            running: raw.state.running,
            status: raw.state.status,
            pid: raw.state.pid,
            restart_policy: raw.host_config.restart_policy.name,
        })
    }

    /// `GET /containers/json`: the running containers and their network addresses.
    ///
    /// The list names a container's image by id instead of its reference when the
    /// reference has since moved to another image (`docker pull` of a newer tag); such a
    /// container is inspected, so its image reads the same as `inspect` gives it and rules
    /// scoped to the reference keep matching.
    pub async fn running(&self) -> Result<Vec<RunningContainer>, DockerError> {
        let body = self
            .call(Method::GET, "/containers/json", None, self.timeout)
            .await?;
        let listed: Vec<Listed> = serde_json::from_slice(&body)?;
        let mut out = Vec::with_capacity(listed.len());
        for c in listed {
            let addresses = c.addresses();
            let name = c
                .names
                .iter()
                // Legacy links add `/other/alias` names; the container's own has one `/`.
                .find(|n| n.rfind('/') == Some(0))
                .or(c.names.first())
                .map(|n| n.trim_start_matches('/').to_string())
                .unwrap_or_default();
            let image = if c.image == c.image_id || c.image.starts_with("sha256:") {
                self.inspect(&c.id).await?.image
            } else {
                c.image
            };
            out.push(RunningContainer {
                id: c.id,
                name,
                image,
                labels: c.labels.unwrap_or_default(),
                addresses,
            });
        }
        Ok(out)
    }

    /// `POST /containers/{id}/update` with a restart policy.
    pub async fn set_restart_policy(
        &self,
        id: &str,
        policy: RestartPolicy,
    ) -> Result<(), DockerError> {
        check_id(id)?;
        let name = match policy {
            RestartPolicy::No => "no",
            RestartPolicy::UnlessStopped => "unless-stopped",
        };
        let body = serde_json::json!({ "RestartPolicy": { "Name": name } }).to_string();
        self.call(
            Method::POST,
            &format!("/containers/{id}/update"),
            Some(body.into()),
            self.timeout,
        )
        .await
        .map(drop)
    }

    /// `POST /containers/{id}/stop?t=SECONDS`; a container already stopped is fine.
    pub async fn stop(&self, id: &str, grace: Duration) -> Result<(), DockerError> {
        check_id(id)?;
        let path = format!("/containers/{id}/stop?t={}", grace.as_secs());
        // The engine answers once the container is down: allow for the grace period.
        match self
            .call(Method::POST, &path, None, self.timeout + grace)
            .await
        {
            Err(DockerError::Status { status, .. }) if status == StatusCode::NOT_MODIFIED => Ok(()),
            other => other.map(drop),
        }
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
        deadline: Duration,
    ) -> Result<Bytes, DockerError> {
        tokio::time::timeout(deadline, self.exchange(method, path, body))
            .await
            .map_err(|_| DockerError::Timeout(deadline))?
    }

    async fn exchange(
        &self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<Bytes, DockerError> {
        let stream = tokio::net::UnixStream::connect(&self.socket)
            .await
            .map_err(|source| DockerError::Connect {
                socket: self.socket.clone(),
                source,
            })?;
        let (mut sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
        let conn = tokio::spawn(conn);
        let has_body = body.is_some();
        let mut req = Request::builder()
            .method(method.clone())
            .uri(path)
            .header(header::HOST, "docker");
        if has_body {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        let req = req
            .body(Full::new(body.unwrap_or_default()))
            .map_err(|e| DockerError::Body(e.to_string()))?;
        let resp = sender.send_request(req).await?;
        let status = resp.status();
        let bytes = Limited::new(resp.into_body(), MAX_RESPONSE)
            .collect()
            .await
            .map_err(|e| DockerError::Body(e.to_string()))?
            .to_bytes();
        conn.abort();
        if !status.is_success() {
            #[derive(Deserialize)]
            struct Message {
                message: String,
            }
            let message = serde_json::from_slice::<Message>(&bytes)
                .map(|m| m.message)
                .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).chars().take(200).collect());
            return Err(DockerError::Status {
                method,
                path: path.to_string(),
                status,
                message,
            });
        }
        Ok(bytes)
    }
}

/// Ids and names go into a URL path: allow only what Docker allows in either.
fn check_id(id: &str) -> Result<(), DockerError> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(DockerError::InvalidId(id.to_string()))
    }
}

/// One entry of `GET /containers/json` (API 1.41 and later keep these fields).
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Listed {
    id: String,
    #[serde(default)]
    names: Vec<String>,
    #[serde(default)]
    image: String,
    #[serde(rename = "ImageID", default)]
    image_id: String,
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    network_settings: Option<ListedNetworkSettings>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListedNetworkSettings {
    #[serde(default)]
    networks: Option<BTreeMap<String, ListedNetwork>>,
}

#[derive(Deserialize)]
struct ListedNetwork {
    #[serde(rename = "IPAddress", default)]
    ip_address: String,
    #[serde(rename = "GlobalIPv6Address", default)]
    global_ipv6_address: String,
}

impl Listed {
    /// Every address on every network; empty strings (host and none networks, a
    /// container not yet connected) are left out.
    fn addresses(&self) -> Vec<IpAddr> {
        let Some(networks) = self
            .network_settings
            .as_ref()
            .and_then(|n| n.networks.as_ref())
        else {
            return Vec::new();
        };
        let mut out: Vec<IpAddr> = networks
            .values()
            .flat_map(|n| [&n.ip_address, &n.global_ipv6_address])
            .filter_map(|a| a.parse().ok())
            .collect();
        out.sort();
        out.dedup();
        out
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Inspect {
    id: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    image: String,
    config: InspectConfig,
    #[serde(default)]
    state: InspectState,
    #[serde(default)]
    host_config: InspectHostConfig,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct InspectConfig {
    #[serde(default)]
    image: String,
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct InspectState {
    #[serde(default)]
    running: bool,
    #[serde(default)]
    status: String,
    #[serde(default)]
    pid: u32,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct InspectHostConfig {
    #[serde(default)]
    restart_policy: InspectRestartPolicy,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct InspectRestartPolicy {
    #[serde(default)]
    name: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shape dockerd 20.10 (API 1.41) answers, trimmed: one container on a
    /// user-defined bridge and on an IPv6 network, one with `--network host`.
    #[test]
    fn listed_containers_give_their_addresses() {
        let body = r#"[
          {"Id":"81fa","Names":["/web"],"Image":"nginx:1.27","ImageID":"sha256:f28f",
           "Labels":{"tier":"web"},"State":"running",
           "NetworkSettings":{"Networks":{
             "front":{"NetworkID":"23ea","Gateway":"10.213.0.1","IPAddress":"10.213.0.2","IPPrefixLen":24,"IPv6Gateway":"","GlobalIPv6Address":"","GlobalIPv6PrefixLen":0},
             "v6":{"IPAddress":"172.30.0.5","GlobalIPv6Address":"fd00:db8::5"}}}},
          {"Id":"92ab","Names":["/hostnet"],"Image":"busybox","ImageID":"sha256:aaaa","Labels":null,
           "NetworkSettings":{"Networks":{"host":{"IPAddress":"","GlobalIPv6Address":""}}}}
        ]"#;
        let listed: Vec<Listed> = serde_json::from_str(body).unwrap();
        let addrs: Vec<Vec<String>> = listed
            .iter()
            .map(|c| c.addresses().iter().map(|a| a.to_string()).collect())
            .collect();
        assert_eq!(
            addrs,
            vec![
                vec!["10.213.0.2", "172.30.0.5", "fd00:db8::5"],
                Vec::<&str>::new()
            ]
        );
        assert!(listed[1].labels.is_none());
    }

    #[test]
    fn ids_that_could_escape_the_path_are_refused() {
        for bad in ["", "../../info", "a/b", "x?y", "a b", &"a".repeat(129)] {
            assert!(check_id(bad).is_err(), "{bad}");
        }
        for good in ["web", "my_app.1-2", "4f2a8a0b6c1d"] {
            assert!(check_id(good).is_ok(), "{good}");
        }
    }
}
