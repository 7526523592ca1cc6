//! The `/metrics` endpoint the worker and the agent serve (`GPUAAS_METRICS_LISTEN`).

use gpuaas_activities::service::{count_activity_failure, init_metrics, metric_names};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};

fn scrape(addr: SocketAddr) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

#[test]
fn the_endpoint_serves_counters_in_prometheus_text_format() {
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    init_metrics(Some(addr)).unwrap();
    count_activity_failure("allocate", "internal");
    count_activity_failure("allocate", "internal");
    metrics::histogram!(metric_names::PROVISIONING_DURATION).record(1.7);

    let response = scrape(addr);
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
    assert!(response.contains("content-type: text/plain; version=0.0.4"));
    assert!(
        response
            .contains(r#"gpuaas_activity_failures_total{activity="allocate",type="internal"} 2"#),
        "{response}"
    );
    assert!(
        response.contains(r#"gpuaas_provisioning_duration_seconds_bucket{le="2.5"} 1"#),
        "a histogram with the configured buckets: {response}"
    );
    assert!(response.contains("# HELP gpuaas_activity_failures_total"));
    // A second call reuses the recorder (several services share one test process).
    init_metrics(None).unwrap();
    assert!(scrape(addr).contains("gpuaas_activity_failures_total"));
}
