//! The managed stack over the HTTP API (protocol.md §12): apply a manifest, see the stack, take it
//! down, read the start-up profile. Replies are the protocol's stack types; error replies become
//! [`Error::Remote`] with the server's code.

use std::sync::Once;
use std::time::Duration;

use orch_protocol::error::ErrorReply;
use orch_protocol::stack::{RunProfile, StackApplied, StackView, Stopped};
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

/// Makes ring the process's rustls crypto provider (the one async-nats and reqwest use here);
/// a no-op when one is installed already.
pub fn install_crypto_provider() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        // Fails only when something else installed a provider first, which serves as well.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// A client of the stack routes of one orchestrator's HTTP API.
#[derive(Clone)]
pub struct StackClient {
    /// `<url>/api/v1`.
    base: String,
    http: reqwest::Client,
}

impl StackClient {
    /// `api_url` is the orchestrator's HTTP address (e.g. `http://127.0.0.1:8080`); `token`, if
    /// any, is sent as a bearer token.
    pub fn new(api_url: &str, token: Option<&str>) -> Result<StackClient> {
        install_crypto_provider();
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(token) = token {
            let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| Error::invalid("api_token", "must be visible ASCII"))?;
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .default_headers(headers)
            .build()
            .map_err(|e| Error::Connection(format!("cannot build the HTTP client: {e}")))?;
        Ok(StackClient { base: format!("{}/api/v1", api_url.trim_end_matches('/')), http })
    }

    /// `PUT /stack`: applies `manifest` (TOML text); `source` is recorded as who applied it.
    pub async fn apply(&self, manifest: String, source: &str) -> Result<StackApplied> {
        let query = serde_urlencoded::to_string([("source", source)])
            .map_err(|e| Error::invalid("source", format!("cannot be sent: {e}")))?;
        let request = self
            .http
            .put(format!("{}/stack?{query}", self.base))
            .header(reqwest::header::CONTENT_TYPE, "application/toml")
            .body(manifest);
        self.send(request, "PUT /stack").await
    }

    /// `GET /stack`: the managed services and their states.
    pub async fn stack(&self) -> Result<StackView> {
        self.send(self.http.get(format!("{}/stack", self.base)), "GET /stack").await
    }

    /// `GET /stack/profile`: the start-up run in progress, or the last one.
    pub async fn profile(&self) -> Result<RunProfile> {
        self.send(self.http.get(format!("{}/stack/profile", self.base)), "GET /stack/profile").await
    }

    /// `GET /cluster`: the replicas, the leader, its term (protocol.md §15.2), as JSON.
    pub async fn cluster(&self) -> Result<serde_json::Value> {
        self.send(self.http.get(format!("{}/cluster", self.base)), "GET /cluster").await
    }

    /// `GET /nodes`: the node inventory.
    pub async fn nodes(&self) -> Result<orch_protocol::resources::NodeList> {
        self.send(self.http.get(format!("{}/nodes", self.base)), "GET /nodes").await
    }

    /// `GET /nodes/{name}`: one node.
    pub async fn node(&self, name: &str) -> Result<orch_protocol::resources::NodeInfo> {
        self.send(self.http.get(format!("{}/nodes/{name}", self.base)), "GET /nodes/{name}").await
    }

    /// `GET /quotas`: every quota with what its group asks for now.
    pub async fn quotas(&self) -> Result<orch_protocol::resources::QuotaList> {
        self.send(self.http.get(format!("{}/quotas", self.base)), "GET /quotas").await
    }

    /// `PUT /quotas/{name}` (admins): sets a group's quota.
    pub async fn set_quota(&self, name: &str, cpu: u64, memory: u64) -> Result<orch_protocol::resources::QuotaView> {
        let body = orch_protocol::resources::QuotaRequest { cpu, memory };
        let request = self
            .http
            .put(format!("{}/quotas/{name}", self.base))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(serde_json::to_vec(&body).expect("a quota serializes"));
        self.send(request, "PUT /quotas/{name}").await
    }

    /// `DELETE /quotas/{name}` (admins): removes a group's quota.
    pub async fn clear_quota(&self, name: &str) -> Result<()> {
        self.send_raw(self.http.delete(format!("{}/quotas/{name}", self.base)), "DELETE /quotas/{name}").await?;
        Ok(())
    }

    /// `PUT /workflows/{name}`: stores a workflow definition (TOML) as its next version.
    pub async fn put_workflow(&self, name: &str, text: String) -> Result<serde_json::Value> {
        let request = self
            .http
            .put(format!("{}/workflows/{name}", self.base))
            .header(reqwest::header::CONTENT_TYPE, "application/toml")
            .body(text);
        self.send(request, "PUT /workflows").await
    }

    /// `POST /workflows/{name}/executions`: queues an execution with `inputs`.
    pub async fn run_workflow(&self, name: &str, inputs: serde_json::Value) -> Result<serde_json::Value> {
        let request = self
            .http
            .post(format!("{}/workflows/{name}/executions", self.base))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(serde_json::json!({ "inputs": inputs }).to_string());
        self.send(request, "POST /workflows/{name}/executions").await
    }

    /// `GET /executions/{id}`.
    pub async fn execution(&self, id: &str) -> Result<serde_json::Value> {
        self.send(self.http.get(format!("{}/executions/{id}", self.base)), "GET /executions/{id}").await
    }

    /// `GET /executions`, of `workflow` when given.
    pub async fn executions(&self, workflow: Option<&str>) -> Result<serde_json::Value> {
        let query = workflow.map(|w| format!("?workflow={w}")).unwrap_or_default();
        self.send(self.http.get(format!("{}/executions{query}", self.base)), "GET /executions").await
    }

    /// `POST /executions/{id}/signal`: `decision` (`approve` or `reject`) for the approval step
    /// `step`.
    pub async fn signal_execution(
        &self,
        id: &str,
        step: &str,
        decision: &str,
        comment: Option<&str>,
    ) -> Result<serde_json::Value> {
        let request = self
            .http
            .post(format!("{}/executions/{id}/signal", self.base))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(serde_json::json!({ "step": step, "decision": decision, "comment": comment }).to_string());
        self.send(request, "POST /executions/{id}/signal").await
    }

    /// `POST /executions/{id}/retry` from `from` (`failed` or `start`).
    pub async fn retry_execution(&self, id: &str, from: &str) -> Result<serde_json::Value> {
        let request = self
            .http
            .post(format!("{}/executions/{id}/retry", self.base))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(serde_json::json!({ "from": from }).to_string());
        self.send(request, "POST /executions/{id}/retry").await
    }

    /// `GET /schedules`.
    pub async fn schedules(&self) -> Result<serde_json::Value> {
        self.send(self.http.get(format!("{}/schedules", self.base)), "GET /schedules").await
    }

    /// `GET /hooks`.
    pub async fn hooks(&self) -> Result<serde_json::Value> {
        self.send(self.http.get(format!("{}/hooks", self.base)), "GET /hooks").await
    }

    /// `PUT /hooks/{name}/secret`.
    pub async fn set_hook_secret(&self, name: &str, secret: &str) -> Result<serde_json::Value> {
        let request = self
            .http
            .put(format!("{}/hooks/{name}/secret", self.base))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(serde_json::json!({ "secret": secret }).to_string());
        self.send(request, "PUT /hooks/{name}/secret").await
    }

    /// `GET /queues`.
    pub async fn queues(&self) -> Result<serde_json::Value> {
        self.send(self.http.get(format!("{}/queues", self.base)), "GET /queues").await
    }

    /// `POST /executions/{id}/cancel`.
    pub async fn cancel_execution(&self, id: &str) -> Result<serde_json::Value> {
        self.send(self.http.post(format!("{}/executions/{id}/cancel", self.base)), "POST /executions/{id}/cancel").await
    }

    /// `GET /stack/versions`: stored manifest versions, newest first, older than `before`.
    pub async fn versions(
        &self,
        limit: Option<usize>,
        before: Option<i64>,
    ) -> Result<orch_protocol::history::ManifestVersions> {
        let mut query = Vec::new();
        if let Some(limit) = limit {
            query.push(("limit", limit.to_string()));
        }
        if let Some(before) = before {
            query.push(("before", before.to_string()));
        }
        let query = serde_urlencoded::to_string(&query).expect("numbers encode");
        let request = self.http.get(format!("{}/stack/versions?{query}", self.base));
        self.send(request, "GET /stack/versions").await
    }

    /// `GET /stack/versions/{version}`: one version with the manifest's text.
    pub async fn version(&self, version: i64) -> Result<orch_protocol::history::ManifestVersionText> {
        let request = self.http.get(format!("{}/stack/versions/{version}", self.base));
        self.send(request, "GET /stack/versions/{version}").await
    }

    /// `GET /stack/diff`: what changed from one version to another.
    pub async fn diff(&self, from: i64, to: i64) -> Result<orch_protocol::history::ManifestDiff> {
        let request = self.http.get(format!("{}/stack/diff?from={from}&to={to}", self.base));
        self.send(request, "GET /stack/diff").await
    }

    /// `POST /stack/versions/{version}/rollback`: applies that version again as a new one.
    pub async fn rollback(&self, version: i64) -> Result<StackApplied> {
        let request = self.http.post(format!("{}/stack/versions/{version}/rollback", self.base));
        self.send(request, "POST /stack/versions/{version}/rollback").await
    }

    /// `GET /config/{key}`. Keys and prefixes are sent as they are: a valid one needs no escaping,
    /// and the server refuses another with its reason.
    pub async fn config_get(&self, key: &str) -> Result<orch_protocol::config_store::ConfigEntry> {
        self.send(self.http.get(format!("{}/config/{}", self.base, key)), "GET /config/{key}").await
    }

    /// `GET /config?prefix=`.
    pub async fn config_list(&self, prefix: &str) -> Result<orch_protocol::config_store::ConfigList> {
        let query = serde_urlencoded::to_string([("prefix", prefix)]).expect("text encodes");
        self.send(self.http.get(format!("{}/config?{query}", self.base)), "GET /config").await
    }

    /// `PUT /config/{key}`, with compare-and-set when `revision` is given.
    pub async fn config_put(
        &self,
        key: &str,
        value: serde_json::Value,
        revision: Option<u64>,
    ) -> Result<orch_protocol::config_store::ConfigChange> {
        let body = orch_protocol::config_store::PutRequest { key: None, value, revision };
        let request = self.json(self.http.put(format!("{}/config/{}", self.base, key)), &body);
        self.send(request, "PUT /config/{key}").await
    }

    /// `DELETE /config/{key}`, with compare-and-set when `revision` is given.
    pub async fn config_delete(
        &self,
        key: &str,
        revision: Option<u64>,
    ) -> Result<orch_protocol::config_store::ConfigChange> {
        let query = revision.map(|r| format!("?revision={r}")).unwrap_or_default();
        let request = self.http.delete(format!("{}/config/{}{query}", self.base, key));
        self.send(request, "DELETE /config/{key}").await
    }

    /// `GET /config/{key}/history`.
    pub async fn config_history(&self, key: &str) -> Result<orch_protocol::config_store::ConfigHistory> {
        let request = self.http.get(format!("{}/config/{}/history", self.base, key));
        self.send(request, "GET /config/{key}/history").await
    }

    /// `POST /config/{key}/revert`.
    pub async fn config_revert(&self, key: &str, to: u64) -> Result<orch_protocol::config_store::ConfigChange> {
        let body = orch_protocol::config_store::RevertRequest { key: None, to };
        let request = self.json(self.http.post(format!("{}/config/{}/revert", self.base, key)), &body);
        self.send(request, "POST /config/{key}/revert").await
    }

    /// `PUT /config-schemas/{prefix}`.
    pub async fn config_set_schema(
        &self,
        prefix: &str,
        schema: serde_json::Value,
    ) -> Result<orch_protocol::config_store::ConfigSchema> {
        let body = orch_protocol::config_store::SchemaRequest { prefix: None, schema: Some(schema) };
        let request = self.json(self.http.put(format!("{}/config-schemas/{}", self.base, prefix)), &body);
        self.send(request, "PUT /config-schemas/{prefix}").await
    }

    fn json(&self, request: reqwest::RequestBuilder, body: &impl serde::Serialize) -> reqwest::RequestBuilder {
        request
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(serde_json::to_vec(body).expect("a request serializes"))
    }

    /// `POST /health/self-preservation/end`: ends self-preservation, saying why.
    pub async fn end_self_preservation(&self, reason: Option<&str>) -> Result<serde_json::Value> {
        let request = self
            .http
            .post(format!("{}/health/self-preservation/end", self.base))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(
                serde_json::to_vec(&orch_protocol::health::EndSelfPreservationRequest {
                    reason: reason.map(str::to_string),
                })
                .expect("serializes"),
            );
        self.send(request, "POST /health/self-preservation/end").await
    }

    /// `DELETE /stack`: stops every managed service in reverse dependency order; answered once all
    /// have stopped.
    pub async fn down(&self) -> Result<Stopped> {
        self.send(self.http.delete(format!("{}/stack", self.base)), "DELETE /stack").await
    }

    /// `GET /stack/services/{service}/logs`: the last lines of a service's output matching
    /// `query` (`limit`, `since`, `until`, `stream`, `q`, `regex`, `scan_bytes`).
    pub async fn logs(&self, service: &str, query: &[(&str, String)]) -> Result<orch_protocol::lifecycle::ServiceLogs> {
        let query = serde_urlencoded::to_string(query).map_err(|e| Error::invalid("query", e.to_string()))?;
        let url = format!("{}/stack/services/{service}/logs?{query}", self.base);
        self.send(self.http.get(url), "GET /stack/services/{name}/logs").await
    }

    /// `GET /stack/services/{service}/logs/follow`: the service's new lines matching `query`
    /// (`stream`, `q`, `regex`) as they are written, until the stream is dropped. Subscribed
    /// when this returns.
    pub async fn follow_logs(
        &self,
        service: &str,
        query: &[(&str, String)],
    ) -> Result<impl futures::Stream<Item = Result<orch_protocol::lifecycle::ServiceLogLine>> + use<>> {
        use futures::StreamExt;
        let what = "GET /stack/services/{name}/logs/follow";
        let query = serde_urlencoded::to_string(query).map_err(|e| Error::invalid("query", e.to_string()))?;
        let url = format!("{}/stack/services/{service}/logs/follow?{query}", self.base);
        // A follow lasts as long as its reader wants: no overall timeout (a year).
        let request = self.http.get(url).timeout(Duration::from_secs(365 * 24 * 3600));
        let response = request
            .send()
            .await
            .map_err(|e| Error::Connection(format!("{what}: is the orchestrator running at {}? ({e})", self.base)))?;
        if !response.status().is_success() {
            let status = response.status();
            let bytes = response.bytes().await.unwrap_or_default();
            return Err(match serde_json::from_slice::<ErrorReply>(&bytes) {
                Ok(reply) => Error::Remote(reply.error, None),
                Err(_) => Error::Decode(format!("{what}: {status} without an error object")),
            });
        }
        let mut pending: Vec<u8> = Vec::new();
        Ok(response.bytes_stream().flat_map(move |chunk| {
            let lines: Vec<Result<orch_protocol::lifecycle::ServiceLogLine>> = match chunk {
                Err(e) => vec![Err(Error::Connection(format!("{what}: the stream broke off: {e}")))],
                Ok(chunk) => {
                    pending.extend_from_slice(&chunk);
                    let mut lines = Vec::new();
                    while let Some(end) = pending.iter().position(|b| *b == b'\n') {
                        let line: Vec<u8> = pending.drain(..=end).collect();
                        lines.push(crate::requests::decode(what, &line));
                    }
                    lines
                }
            };
            futures::stream::iter(lines)
        }))
    }

    async fn send<T: DeserializeOwned>(&self, request: reqwest::RequestBuilder, what: &str) -> Result<T> {
        let bytes = self.send_raw(request, what).await?;
        crate::requests::decode(what, &bytes)
    }

    /// The body of a successful answer; an error answer as [`Error::Remote`].
    async fn send_raw(&self, request: reqwest::RequestBuilder, what: &str) -> Result<bytes::Bytes> {
        let response = request.send().await.map_err(|e| {
            if e.is_timeout() {
                Error::Timeout(format!("{what}: no answer from {} in time", self.base))
            } else {
                Error::Connection(format!("{what}: is the orchestrator running at {}? ({e})", self.base))
            }
        })?;
        let status = response.status();
        let retry_after = response.headers().get(reqwest::header::RETRY_AFTER).and_then(|v| v.to_str().ok());
        let retry_after = Error::parse_retry_after(retry_after);
        let bytes =
            response.bytes().await.map_err(|e| Error::Connection(format!("{what}: the answer broke off: {e}")))?;
        if !status.is_success() {
            return Err(match serde_json::from_slice::<ErrorReply>(&bytes) {
                Ok(reply) => Error::Remote(reply.error, retry_after),
                Err(_) => Error::Decode(format!(
                    "{what}: {status} without an error object: {}",
                    String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
                )),
            });
        }
        Ok(bytes)
    }
}
