//! The orchestrator against NATS servers that require authentication: a user with exactly the
//! permissions docs/protocol.md §14.2 lists, a token, an NKey, and mutual TLS. Each time it must
//! provision its streams, answer a request and publish the event.

mod common;

use std::time::Duration;

use orch_testkit::{NatsServer, ShippedUsers};
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
                             "orch.agent.>", "$SRV.>", "orch.replies.>"] }
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

/// Test settings of an orchestrator on a fresh database that connects as the shipped
/// `orchestrator` user.
async fn orchestrator_settings(users: &ShippedUsers) -> orchestrator::Settings {
    let database = orch_testkit::fresh_database().await;
    let mut settings = common::settings(&users.nats.url(), &database);
    settings.nats.credentials =
        Credentials::UserPassword { user: "orchestrator".into(), password: users.password("orchestrator") };
    settings
}

/// The users `make dev` and docker-compose run with (scripts/nats-auth.sh), against a real
/// server: anonymous clients are refused; the orchestrator works with its user; a registering
/// service registers but cannot ask an agent to start anything or drive the lifecycle; the
/// engine sets priorities but cannot change a policy or release the guard; an observer reads
/// the events and changes nothing. Each names itself at the end of its subjects and cannot name
/// another or none, so the orchestrator records who asked (`nats:<user>`). A refused publish is shown absent deterministically: the same
/// connection publishes an allowed message after it, and NATS keeps one connection's order, so
/// once a watcher has the allowed one it would have had the refused one.
#[tokio::test]
async fn the_shipped_users_have_least_privilege() {
    use futures::StreamExt;
    common::init_logs();
    let users = ShippedUsers::start(&[]);
    let connect = |role: &'static str| users.connect(role);

    let anonymous = async_nats::ConnectOptions::new().connect(users.nats.url()).await;
    assert!(anonymous.is_err(), "anonymous clients are refused");

    let running =
        orchestrator::start(orchestrator_settings(&users).await).await.expect("the orchestrator starts with its user");

    // A watcher with the orchestrator's rights sees what reaches the agents and the requests.
    let watcher = connect("orchestrator").await;
    let mut seen = futures::stream::select_all([
        watcher.subscribe("orch.req.>").await.unwrap(),
        watcher.subscribe("orch.hb.>").await.unwrap(),
        watcher.subscribe("orch.agent.>").await.unwrap(),
    ]);
    watcher.flush().await.unwrap();
    let refused_then_allowed = |client: async_nats::Client, refused: &'static str, allowed: &'static str| async move {
        client.publish(refused, "{}".into()).await.unwrap();
        client.publish(allowed, "{}".into()).await.unwrap();
        client.flush().await.unwrap();
    };

    let service = connect("service").await;
    let registration = r#"{"id": "web-1", "name": "web", "address": "127.0.0.1", "port": 80}"#;
    let reply =
        service.request("orch.req.registry.register.service", registration.into()).await.expect("a service registers");
    assert!(String::from_utf8_lossy(&reply.payload).contains("registered"));
    refused_then_allowed(service.clone(), "orch.agent.local.start", "orch.hb.web-1").await;
    refused_then_allowed(service.clone(), "orch.req.lifecycle.down.service", "orch.hb.web-1").await;
    // Neither another's name nor none.
    refused_then_allowed(service.clone(), "orch.req.registry.register.operator", "orch.hb.web-1").await;
    refused_then_allowed(service, "orch.req.registry.register", "orch.hb.web-1").await;

    let engine = connect("engine").await;
    let set = r#"{"service": "web", "value": 70, "reason": "test", "source": "engine"}"#;
    let reply = engine.request("orch.req.priority.set.engine", set.into()).await.expect("the engine sets a priority");
    let change: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(change["change"]["principal"], "nats:engine", "{change}");
    refused_then_allowed(engine.clone(), "orch.req.priority.release.engine", "orch.req.priority.list.engine").await;
    refused_then_allowed(engine.clone(), "orch.req.priority.policy.engine", "orch.req.priority.list.engine").await;
    refused_then_allowed(engine, "orch.req.priority.set.operator", "orch.req.priority.list.engine").await;

    let observer = connect("observer").await;
    let js = async_nats::jetstream::new(observer.clone());
    // The reply came after the commit; the event follows through the outbox relay, so wait for it.
    common::eventually(Duration::from_secs(20), "the observer reads the registered event", || async {
        let events = common::read_stream(&js, "ORCH_EVENTS", None).await;
        events.iter().any(|e| e["type"] == "io.orch.registry.registered.v1").then_some(())
    })
    .await;
    refused_then_allowed(observer, "orch.req.lifecycle.apply.observer", "orch.req.registry.list.observer").await;

    // Every allowed message arrived (4 heartbeats, 3 lists from the engine, 1 from the observer)
    // and none of the refused ones did.
    let mut allowed = 0;
    while allowed < 8 {
        let message = tokio::time::timeout(Duration::from_secs(20), seen.next()).await.expect("in time").unwrap();
        let subject = message.subject.as_str();
        assert!(
            ![
                "orch.agent.local.start",
                "orch.req.lifecycle.down.service",
                "orch.req.registry.register.operator",
                "orch.req.registry.register",
                "orch.req.priority.release.engine",
                "orch.req.priority.policy.engine",
                "orch.req.priority.set.operator",
                "orch.req.lifecycle.apply.observer"
            ]
            .contains(&subject),
            "{subject} reached the orchestrator's side"
        );
        if ["orch.hb.web-1", "orch.req.priority.list.engine", "orch.req.registry.list.observer"].contains(&subject) {
            allowed += 1;
        }
    }
    running.shutdown().await;
}

/// A standalone agent with the user `scripts/nats-auth.sh DIR HOST:PORT NODE` makes for it runs
/// its node's services for the orchestrator, and can do nothing else: it cannot report for another
/// node or ask any agent to start a process. Absence is shown as in the test above: an allowed
/// message sent after the refused ones arrives, and NATS keeps one connection's order.
#[tokio::test]
async fn a_node_agent_user_serves_its_own_node_and_nothing_else() {
    use futures::StreamExt;
    common::init_logs();
    let users = ShippedUsers::start(&["edge"]);
    let password = |role: &str| users.password(role);
    let with_user = |role: &str| users.url(role);
    let url_file = users.file("agent-edge.url");
    assert_eq!(url_file.trim(), format!("nats://agent-edge:{}@127.0.0.1:4222", password("agent-edge")));

    let running =
        orchestrator::start(orchestrator_settings(&users).await).await.expect("the orchestrator starts with its user");

    // The agent of node edge, with its own user, runs a service placed there.
    let logs = orch_testkit::TempDir::new("agent-edge");
    let _leftovers = common::KillServicesOf(logs.path().to_path_buf());
    let mut agent = std::process::Command::new(env!("CARGO_BIN_EXE_orchestrator"))
        .args(["agent", "--node", "edge", "--nats-url", &with_user("agent-edge"), "--log", "warn"])
        .arg("--log-dir")
        .arg(logs.path())
        .spawn()
        .expect("the agent starts");
    let manifest = format!(
        "[services.remote]\ncommand = \"{}\"\nargs = [\"--ready-after\", \"0ms\"]\nport = {}\nnode = \"edge\"\n\
         readiness = {{ kind = \"tcp\", interval = \"1s\" }}\n",
        env!("CARGO_BIN_EXE_orch-sleeper"),
        orch_testkit::free_port()
    );
    let call = |method: &'static str, uri: &'static str, body: Option<String>| {
        common::http::call_running(&running, method, uri, body, "application/toml", &[])
    };
    let (status, reply) = call("PUT", "/api/v1/stack", Some(manifest)).await;
    assert_eq!(status, 202, "{reply}");
    common::eventually(Duration::from_secs(30), "the service runs on edge", || async {
        let (_, view) = call("GET", "/api/v1/stack", None).await;
        let service = view["services"].as_array()?.iter().find(|s| s["name"] == "remote")?.clone();
        (service["state"] == "ready" && service["node"] == "edge").then_some(())
    })
    .await;
    let (status, lines) = call("GET", "/api/v1/stack/services/remote/logs", None).await;
    assert_eq!(status, 200, "its logs are read through the agent: {lines}");

    // What the agent's user may not do.
    let connect = |role: &'static str| users.connect(role);
    // The agents report on these subjects too: the test's messages carry markers of their own.
    let watcher = connect("orchestrator").await;
    let mut seen = watcher.subscribe("orch.agent.>").await.unwrap();
    watcher.flush().await.unwrap();
    let edge = connect("agent-edge").await;
    // Publishing: a start for its own node, and reports for another node, are refused.
    for refused in ["orch.agent.edge.start", "orch.agent.local.exited", "orch.agent.local.pressure"] {
        edge.publish(refused, "refused".into()).await.unwrap();
    }
    edge.publish("orch.agent.edge.pressure", "allowed".into()).await.unwrap();
    edge.flush().await.unwrap();
    loop {
        let message = tokio::time::timeout(Duration::from_secs(20), seen.next()).await.expect("in time").unwrap();
        assert_ne!(&message.payload[..], b"refused", "{} was published by the agent of edge", message.subject);
        if &message.payload[..] == b"allowed" {
            break;
        }
    }
    // Subscribing to another node's requests is refused by the server.
    let (tx, mut violations) = tokio::sync::mpsc::unbounded_channel();
    let snoop = async_nats::ConnectOptions::with_user_and_password("agent-edge".into(), password("agent-edge"))
        .event_callback(move |event| {
            let tx = tx.clone();
            async move {
                if let async_nats::Event::ServerError(error) = event {
                    let _ = tx.send(error.to_string());
                }
            }
        })
        .connect(users.nats.url())
        .await
        .unwrap();
    let _other = snoop.subscribe("orch.agent.local.*").await.unwrap();
    snoop.flush().await.unwrap();
    let violation = tokio::time::timeout(Duration::from_secs(20), violations.recv()).await.expect("in time").unwrap();
    assert!(violation.contains("Permissions Violation for Subscription"), "{violation}");
    drop(snoop);

    let (status, _) = call("DELETE", "/api/v1/stack", None).await;
    assert_eq!(status, 200);
    agent.kill().unwrap();
    agent.wait().unwrap();
    running.shutdown().await;
}

/// With the `checks` user of scripts/nats-auth.sh, nats health checks are sent over a connection
/// of their own whose user may publish only `$SRV.>`: a subject an operator allowed by mistake
/// (`$JS.API.INFO`, the JetStream API) gets no answer, while over the orchestrator's own
/// connection the same check is answered. A `$SRV.>` check still goes out (nobody answers it
/// here: "no responders", not a refusal).
#[tokio::test]
async fn nats_checks_are_sent_as_the_checks_user() {
    common::init_logs();
    let users = ShippedUsers::start(&[]);
    let config = users.file("orchestrator.toml");
    assert!(config.contains("check-nats-user = \"checks\""), "{config}");

    // The same two checks, with and without the checks user. The JetStream check has time to be
    // answered on a loaded machine: only its refusal may make it fail.
    let mut outputs = Vec::new();
    for checks_user in [true, false] {
        let mut settings = orchestrator_settings(&users).await;
        settings.health.targets = std::sync::Arc::new(orchestrator::registry::check_targets::CheckTargets {
            nats_subjects: vec!["$JS.API.INFO".into()],
            ..Default::default()
        });
        if checks_user {
            settings.health.nats_user = Some(("checks".into(), users.password("checks")));
        }
        let running = orchestrator::start(settings).await.expect("the orchestrator starts");
        // The service answers the NATS service API's ping as the shipped `service` user.
        let service = users.connect("service").await;
        let mut pings = service.subscribe("$SRV.PING.web").await.unwrap();
        // A round trip on the same connection: once answered, the server has the subscription,
        // so no check finds nobody listening.
        service.request("orch.req.registry.list.service", "".into()).await.expect("a list is answered");
        let responder = tokio::spawn(async move {
            use futures::StreamExt;
            while let Some(ping) = pings.next().await {
                if let Some(reply) = ping.reply {
                    let _ = service.publish(reply, r#"{"name":"web"}"#.into()).await;
                }
            }
        });
        let registration = serde_json::json!({
            "id": "web-1", "name": "web", "address": "127.0.0.1", "port": 8080,
            "checks": [
                {"id": "jetstream", "kind": "nats", "subject": "$JS.API.INFO", "interval": "5s", "timeout": "5s"},
                {"id": "ping", "kind": "nats", "subject": "$SRV.PING.web", "interval": "1s", "timeout": "1s"},
            ],
        });
        let request = |method: &'static str, uri: &'static str, body: Option<Value>| {
            common::http::call_running(&running, method, uri, body.map(|b| b.to_string()), "application/json", &[])
        };
        let (status, reply) = request("POST", "/api/v1/services", Some(registration)).await;
        assert!(status.is_success(), "{reply}");
        // The result of each check's last run (its status proper waits for its thresholds).
        let checks = common::eventually(Duration::from_secs(30), "both checks have run", || async {
            let (_, view) = request("GET", "/api/v1/instances/web-1/checks", None).await;
            let checks: Vec<Value> =
                view["checks"].as_array()?.iter().filter(|c| c["kind"] == "nats").cloned().collect();
            (checks.len() == 2
                && checks.iter().all(|c| c["live"]["last_output"].as_str().is_some_and(|o| !o.is_empty())))
            .then_some(checks)
        })
        .await;
        let output = |id: &str| {
            let check = checks.iter().find(|c| c["id"] == id).unwrap();
            let live = &check["live"];
            (live["last_result"].as_str().unwrap().to_string(), live["last_output"].as_str().unwrap().to_string())
        };
        outputs.push((output("jetstream"), output("ping")));
        responder.abort();
        running.shutdown().await;
    }
    let [(jetstream_as_checks, ping_as_checks), (jetstream_as_orchestrator, _)] = outputs.try_into().unwrap();
    assert_eq!(jetstream_as_checks.0, "critical", "{jetstream_as_checks:?}");
    assert!(!jetstream_as_checks.1.contains("io.nats.jetstream.api"), "{jetstream_as_checks:?}");
    assert_eq!(
        jetstream_as_orchestrator.0, "passing",
        "the orchestrator's user reaches it: {jetstream_as_orchestrator:?}"
    );
    assert_eq!(ping_as_checks.0, "passing", "the service user answers the ping: {ping_as_checks:?}");
}
