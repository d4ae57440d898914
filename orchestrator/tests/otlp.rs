//! OTLP export of spans (`--features otlp`): a span made while the exporter is installed reaches
//! an OTLP/HTTP collector when the telemetry guard is dropped. The collector here is a plain
//! HTTP server that records what is posted to it. scripts/test.sh runs this file with the feature.
#![cfg(feature = "otlp")]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;
use std::time::Duration;

/// Accepts posts until the test ends; sends (path, body) of each.
fn collector() -> (String, mpsc::Receiver<(String, Vec<u8>)>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/v1/traces", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            reader.read_line(&mut request_line).unwrap();
            let mut length = 0;
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                if line.trim().is_empty() {
                    break;
                }
                if let Some((name, value)) = line.split_once(':')
                    && name.eq_ignore_ascii_case("content-length")
                {
                    length = value.trim().parse().unwrap();
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").unwrap();
            let path = request_line.split_whitespace().nth(1).unwrap_or_default().to_string();
            let _ = tx.send((path, body));
        }
    });
    (url, rx)
}

#[test]
fn spans_reach_the_collector() {
    let (url, posts) = collector();
    let telemetry = orchestrator::telemetry::install("info", orchestrator::telemetry::LogFormat::Human, Some(&url))
        .expect("the exporter is built");
    tracing::info_span!("http", request_id = "otlp-test-request", route = "/api/v1/services").in_scope(|| {
        tracing::info!("inside the request");
    });
    drop(telemetry); // flushes
    let (path, body) = posts.recv_timeout(Duration::from_secs(20)).expect("a post to the collector");
    assert_eq!(path, "/v1/traces");
    let text = String::from_utf8_lossy(&body);
    assert!(text.contains("otlp-test-request"), "the span's request id is exported");
    assert!(text.contains("orchestrator"), "the service name is exported");
}
