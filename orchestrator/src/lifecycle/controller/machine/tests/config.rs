//! Config keys a service reads: a change restarts it (once running, if its launch may have read
//! the old value), a service that does not restart on a change or does not read the key is left
//! alone, and each launch asks for the keys' values.

use orch_protocol::lifecycle::ServiceState::*;

use super::*;

const STACK: &str = r#"
[services.web]
command = "web"
config = { env = { DB_URL = "web.db.url" } }

[services.batch]
command = "batch"
config = { env = { DB_URL = "web.db.url" }, on_change = "none" }

[services.other]
command = "other"
"#;

fn changed(h: &mut Harness, key: &str) -> Vec<Effect> {
    h.send(Input::ConfigChanged { key: key.into() })
}

#[test]
fn each_launch_asks_for_the_values_of_the_keys_it_reads() {
    let (_, effects) = Harness::up(STACK);
    let config = effects
        .iter()
        .find_map(|e| match e {
            Effect::Launch { service, config, .. } if service == "web" => Some(config.clone()),
            _ => None,
        })
        .expect("web is launched");
    assert_eq!(config, BTreeMap::from([("DB_URL".to_string(), "web.db.url".to_string())]));
}

#[test]
fn a_change_restarts_the_running_services_that_read_the_key_and_restart_on_it() {
    let mut h = Harness::ready(STACK);
    let e = changed(&mut h, "web.db.url");
    assert_eq!(stops(&e), ["web"], "batch reads it but restarts only at its next start; other does not read it");
    assert_eq!(reason(&e, "web", Stopping), "config key web.db.url changed");
    let e = h.stopped("web");
    assert_eq!(launches(&e), ["web"], "started again, reading the new value");
    assert!(stops(&changed(&mut h, "web.db.other")).is_empty(), "a key it does not read");
}

#[test]
fn a_change_while_starting_restarts_it_once_its_process_runs() {
    let (mut h, effects) = Harness::up(STACK);
    assert!(launches(&effects).contains(&"web"));
    assert_eq!(h.state("web"), Starting);
    let e = changed(&mut h, "web.db.url");
    assert!(stops(&e).is_empty(), "no process to stop yet");
    let e = h.launched("web");
    assert_eq!(stops(&e), ["web"], "its launch may have read the old value");
    assert_eq!(reason(&e, "web", Stopping), "a config key it reads changed while it started");
}
