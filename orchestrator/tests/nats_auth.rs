//! The orchestrator against NATS servers that require authentication: a user with exactly the
//! permissions docs/protocol.md §14.2 lists, a token, an NKey, and mutual TLS. Each time it must
//! provision its streams, answer a request and publish the event.

mod common;

use std::time::Duration;

use orch_testkit::NatsServer;
use orchestrator::nats::{Credentials, TlsSettings};
use serde_json::Value;

/// The permissions of the orchestrator's user, as docs/protocol.md §14.2 gives them, and a test
/// client allowed everything.
const DOCUMENTED_PERMISSIONS: &str = r#"
authorization {
  users = [
    { user: orchestrator, password: "orchestrator-secret",
      permissions: {
        publish:   { allow: ["$JS.API.>", "$JS.ACK.ORCH_COMMANDS.>", "orch.evt.>", "orch.dlq.>",
                             "orch.agent.>", "$SRV.PING.>", "orch.replies.>"] }
        subscribe: { allow: ["orch.req.>", "orch.hb.>", "orch.agent.>", "_INBOX.>"] }
        allow_responses: true } }
    { user: client, password: "client-secret" }
  ]
}
"#;

/// Starts the orchestrator with `credentials` and `tls` against `nats`, registers an instance over a NATS request
/// as `client`, and waits for its event on the events stream.
async fn serves(nats_url: &str, credentials: Credentials, tls: TlsSettings, client: async_nats::Client) {
    let database = orch_testkit::fresh_database().await;
    let mut settings = common::settings(nats_url, &database);
    settings.nats.credentials = credentials;
    settings.nats.tls = tls;
    let running = tokio::time::timeout(Duration::from_secs(30), orchestrator::start(settings))
        .await
        .expect("the orchestrator connects and provisions in time")
        .expect("the orchestrator starts");
    let registration = r#"{"id": "web-1", "name": "web", "address": "10.0.0.1", "port": 80}"#;
    let reply = client.request("orch.req.registry.register", registration.into()).await.expect("answered");
    let outcome: Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(outcome["status"], "registered", "{outcome}");
    let js = async_nats::jetstream::new(client);
    common::eventually(Duration::from_secs(20), "the registration's event", || async {
        let events = common::read_stream(&js, "ORCH_EVENTS", None).await;
        events.iter().any(|e| e["type"] == "io.orch.registry.registered.v1").then_some(())
    })
    .await;
    running.shutdown().await;
}

#[tokio::test]
async fn user_with_the_documented_permissions() {
    common::init_logs();
    let nats = NatsServer::start_with_config(DOCUMENTED_PERMISSIONS);
    let client = async_nats::ConnectOptions::with_user_and_password("client".into(), "client-secret".into())
        .connect(nats.url())
        .await
        .unwrap();
    let credentials = Credentials::UserPassword { user: "orchestrator".into(), password: "orchestrator-secret".into() };
    serves(&nats.url(), credentials, TlsSettings::default(), client).await;
}

#[tokio::test]
async fn token() {
    common::init_logs();
    let nats = NatsServer::start_with_config(r#"authorization { token: "a-long-nats-token-0123456789" }"#);
    let client = async_nats::ConnectOptions::with_token("a-long-nats-token-0123456789".into())
        .connect(nats.url())
        .await
        .unwrap();
    let credentials = Credentials::Token("a-long-nats-token-0123456789".into());
    serves(&nats.url(), credentials, TlsSettings::default(), client).await;
}

#[tokio::test]
async fn nkey() {
    common::init_logs();
    let orchestrator_key = nkeys::KeyPair::new_user();
    let client_key = nkeys::KeyPair::new_user();
    let nats = NatsServer::start_with_config(&format!(
        r#"authorization {{ users = [ {{ nkey: "{}" }}, {{ nkey: "{}" }} ] }}"#,
        orchestrator_key.public_key(),
        client_key.public_key()
    ));
    let seed_file = nats.dir().join("orchestrator.nk");
    std::fs::write(&seed_file, format!("{}\n", orchestrator_key.seed().unwrap())).unwrap();
    let client = async_nats::ConnectOptions::with_nkey(client_key.seed().unwrap()).connect(nats.url()).await.unwrap();
    serves(&nats.url(), Credentials::NKeyFile(seed_file), TlsSettings::default(), client).await;
}

#[tokio::test]
async fn mutual_tls() {
    common::init_logs();
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf = |names: Vec<String>| {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(names).unwrap().signed_by(&key, &issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let (server_cert, server_key) = leaf(vec!["127.0.0.1".into(), "localhost".into()]);
    let (client_cert, client_key) = leaf(vec!["orchestrator".into()]);

    let files = orch_testkit::TempDir::new("orch-nats-tls");
    let write = |name: &str, text: &str| {
        let path = files.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_string()
    };
    let ca_file = write("ca.pem", &ca.pem());
    let server_cert_file = write("server.pem", &server_cert);
    let server_key_file = write("server-key.pem", &server_key);
    let client_cert_file = write("client.pem", &client_cert);
    let client_key_file = write("client-key.pem", &client_key);
    let nats = NatsServer::start_with_config(&format!(
        r#"tls {{ cert_file: "{server_cert_file}", key_file: "{server_key_file}", ca_file: "{ca_file}", verify: true }}"#
    ));
    let url = format!("tls://127.0.0.1:{}", nats.port);
    let client = async_nats::ConnectOptions::new()
        .add_root_certificates(ca_file.clone().into())
        .add_client_certificate(client_cert_file.clone().into(), client_key_file.clone().into())
        .require_tls(true)
        .connect(url.as_str())
        .await
        .unwrap();
    let tls = TlsSettings {
        ca: Some(ca_file.into()),
        client: Some((client_cert_file.into(), client_key_file.into())),
        required: true,
    };
    serves(&url, Credentials::None, tls, client).await;
}

#[test]
fn conflicting_ways_to_authenticate_are_refused() {
    let error = common::settings_from_flags(&["--nats-token", "t", "--nats-user", "u", "--nats-password", "p"]);
    assert!(error.unwrap_err().contains("at most one"));
    let error = common::settings_from_flags(&["--nats-user", "u"]);
    assert!(error.unwrap_err().contains("go together"));
}
