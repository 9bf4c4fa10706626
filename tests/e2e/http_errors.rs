//! Every error the real server answers is JSON of the documented shape, whatever produced it:
//! a handler, the router (404, 405), an extractor (a path that is not UTF-8), or the limits on
//! a request's head (414, 431). The few answers hyper's parser writes itself are checked to be
//! exactly what docs/api.md says ("Answers that are not JSON").

use std::time::Duration;

use crate::harness::{HostProcess, data_dir};
use crate::raw_http::{RawResponse, exchange};

const WITHIN: Duration = Duration::from_secs(5);

async fn get(url: &str, target: &str, extra: &str) -> RawResponse {
    exchange(url, format!("GET {target} HTTP/1.1\r\nHost: x\r\n{extra}\r\n").as_bytes(), WITHIN).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn router_and_extractor_errors_are_json() {
    let (_tmp, dir) = data_dir();
    let host = HostProcess::start(&dir, &[]);
    let url = &host.url;

    get(url, "/v2/nothing", "").await.assert_error(404, "not_found");

    let patch = exchange(url, b"PATCH /v1/sagas HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", WITHIN).await;
    let body = patch.assert_error(405, "method_not_allowed");
    assert!(body["error"]["message"].as_str().unwrap().contains("PATCH"), "{body}");
    assert_eq!(patch.header("allow"), Some("GET,HEAD"));
    let delete = exchange(url, b"DELETE /v1/sagas/s/executions HTTP/1.1\r\nHost: x\r\n\r\n", WITHIN).await;
    delete.assert_error(405, "method_not_allowed");
    assert_eq!(delete.header("allow"), Some("POST"));

    // Percent-decoded, these segments are not UTF-8.
    get(url, "/v1/executions/%FF%FE", "").await.assert_error(400, "bad_request");
    get(url, "/v1/sagas/%C3%28", "").await.assert_error(400, "bad_request");
    let trigger = b"POST /v1/sagas/%FF/executions HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}";
    exchange(url, trigger, WITHIN).await.assert_error(400, "bad_request");
    // Malformed percent-encoding is taken literally: no such execution, no such saga name.
    get(url, "/v1/executions/%ZZ", "").await.assert_error(404, "not_found");
    get(url, "/v1/sagas/%ZZ", "").await.assert_error(400, "bad_request");
    get(url, "/v1/executions?limit=%FF", "").await.assert_error(400, "bad_request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_heads_are_json_up_to_the_parser_limits() {
    let (_tmp, dir) = data_dir();
    let host = HostProcess::start(&dir, &[]);
    let url = &host.url;

    let long = format!("/healthz?pad={}", "a".repeat(sagahost::api::MAX_URI_BYTES));
    let answer = get(url, &long, "").await;
    answer.assert_error(414, "uri_too_long");
    assert_eq!(answer.header("connection"), Some("close"));

    let big = format!("X-Padding: {}\r\n", "a".repeat(sagahost::api::MAX_HEADER_BYTES));
    let answer = get(url, "/healthz", &big).await;
    answer.assert_error(431, "headers_too_large");
    assert_eq!(answer.header("connection"), Some("close"));
    // Many small fields add up too.
    let many: String = (0..90).map(|i| format!("X-Field-{i}: {}\r\n", "b".repeat(200))).collect();
    get(url, "/healthz", &many).await.assert_error(431, "headers_too_large");

    // Just under both limits is fine.
    let fine = format!("/healthz?pad={}", "a".repeat(sagahost::api::MAX_URI_BYTES - 100));
    assert_eq!(get(url, &fine, "X-Small: 1\r\n").await.status, 200);
}

/// Answered by hyper's parser before any of our code runs: the status, no body, and the
/// connection closed (docs/api.md, "Answers that are not JSON").
fn assert_parser_answer(answer: &RawResponse, status: u16) {
    assert_eq!(answer.status, status, "{answer:?}");
    assert_eq!(answer.header("content-length"), Some("0"), "{answer:?}");
    assert_eq!(answer.header("connection"), Some("close"), "{answer:?}");
    assert!(answer.header("content-type").is_none(), "{answer:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_of_the_http_parser_are_as_documented() {
    let (_tmp, dir) = data_dir();
    let host = HostProcess::start(&dir, &[]);
    let url = &host.url;

    assert_parser_answer(&exchange(url, b"GARBAGE\r\n\r\n", WITHIN).await, 400);
    assert_parser_answer(&exchange(url, b"GET /healthz HTTP/9.9\r\nHost: x\r\n\r\n", WITHIN).await, 400);
    assert_parser_answer(&exchange(url, b"GET /v1/sagas/\xff HTTP/1.1\r\nHost: x\r\n\r\n", WITHIN).await, 400);
    let bad_length = b"POST /v1/sagas/s/executions HTTP/1.1\r\nHost: x\r\nContent-Length: many\r\n\r\n";
    assert_parser_answer(&exchange(url, bad_length, WITHIN).await, 400);
    let fields: String = (0..101).map(|i| format!("X-{i}: 1\r\n")).collect();
    assert_parser_answer(&get(url, "/healthz", &fields).await, 431);
    // Past hyper's read buffer (about 400-500 KiB).
    let huge = format!("X-Padding: {}\r\n", "a".repeat(1 << 20));
    assert_parser_answer(&get(url, "/healthz", &huge).await, 431);
    assert_parser_answer(&get(url, &format!("/healthz?pad={}", "a".repeat(70_000)), "").await, 414);

    // The host is unharmed.
    assert_eq!(get(url, "/healthz", "").await.status, 200);
}
