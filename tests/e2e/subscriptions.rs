//! Delivery out (docs/subscriptions.md) on the real binary: webhooks get every matching event
//! of the topic log in order, signed; a target that is down is retried, then dead-lettered,
//! and redrive delivers what was dead-lettered; Redis Streams get every event with its id (on
//! the real local Redis when `SAGAHOST_TEST_REDIS_URL` is set); bad subscriptions get JSON
//! errors.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode};
use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{Api, HostProcess, data_dir, wasm};

/// One POST a receiver got.
#[derive(Clone, Debug)]
pub struct Received {
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    pub json: Value,
}

/// A webhook receiver on 127.0.0.1 that records what it accepts, or answers 503 while down.
#[derive(Clone, Default)]
pub struct Receiver {
    pub got: Arc<Mutex<Vec<Received>>>,
    pub refused: Arc<Mutex<usize>>,
    pub down: Arc<AtomicBool>,
}

impl Receiver {
    /// Starts one: its URL.
    pub async fn start() -> (Self, String) {
        let me = Self::default();
        let state = me.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
                let state = state.clone();
                async move {
                    if state.down.load(Ordering::SeqCst) {
                        *state.refused.lock().unwrap() += 1;
                        return StatusCode::SERVICE_UNAVAILABLE;
                    }
                    let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    state.got.lock().unwrap().push(Received { headers, body: body.to_vec(), json });
                    StatusCode::NO_CONTENT
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (me, url)
    }

    /// The ids received so far, in order.
    pub fn ids(&self) -> Vec<String> {
        self.got.lock().unwrap().iter().map(|r| r.json["id"].as_str().unwrap_or("").to_owned()).collect()
    }

    /// Waits until `n` posts were accepted.
    pub async fn until(&self, n: usize, within: Duration) -> Vec<Received> {
        let start = Instant::now();
        loop {
            let got = self.got.lock().unwrap().clone();
            if got.len() >= n {
                return got;
            }
            assert!(start.elapsed() < within, "{} of {n} deliveries after {within:?}", got.len());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

pub async fn publish(api: &Api, topic: &str, id: &str, key: &str, payload: Value) {
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/events/{topic}", api.url))
        .header("Event-Id", id)
        .header("Event-Key", key)
        .body(payload.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 202);
}

pub async fn subscribe(api: &Api, name: &str, doc: Value) -> Value {
    let (status, body) =
        api.call(Method::PUT, &format!("/v1/subscriptions/{name}"), Some(doc.to_string().into_bytes())).await;
    assert!(status == 201 || status == 200, "{status} {body}");
    body
}

async fn dead_letters(api: &Api, name: &str) -> Vec<Value> {
    let (status, body) = api.call(Method::GET, &format!("/v1/subscriptions/{name}/dead-letters"), None).await;
    assert_eq!(status, 200, "{body}");
    body["dead_letters"].as_array().unwrap().clone()
}

fn fast_retry(attempts: u32) -> Value {
    json!({"max_attempts": attempts, "initial_backoff_ms": 10, "multiplier": 2.0, "max_backoff_ms": 40})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_get_every_matching_event_in_order_and_signed() {
    let (receiver, url) = Receiver::start().await;
    let (_tmp, dir) = data_dir();
    let host = HostProcess::start(&dir, &[]);
    let api = Api::new(&host.url);
    let key = "whsec-0123456789abcdef";
    let (status, _) =
        api.call(Method::PUT, "/v1/secrets/hook_key", Some(json!({"value": key}).to_string().into_bytes())).await;
    assert_eq!(status, 201);
    // Published before the subscription exists: not delivered (it starts "now").
    publish(&api, "OrderCreated", "before", "k0", json!({})).await;
    let view = subscribe(
        &api,
        "audit",
        json!({"topics": ["OrderCreated", "CreditReserved"],
               "webhook": {"url": url, "signing_secret": "hook_key"}, "retry": fast_retry(3)}),
    )
    .await;
    assert_eq!(view["webhook"]["signing_secret"], "hook_key");
    assert_eq!(view["topics"], json!(["OrderCreated", "CreditReserved"]));

    // Events from outside and from a step, interleaved with a topic nobody subscribed to.
    let mut expected = Vec::new();
    for i in 0..30 {
        let topic = ["OrderCreated", "CreditReserved", "Unrelated"][i % 3];
        let id = format!("evt-{i}");
        publish(&api, topic, &id, &format!("k{}", i % 4), json!({"n": i})).await;
        if topic != "Unrelated" {
            expected.push(id);
        }
    }
    api.put_plugin("testkit", wasm("testkit")).await;
    api.put_saga("emitter", &json!({"steps": [{"name": "emit", "plugin": "testkit@1.0.0"}]})).await;
    let input = json!({"emit": {"emit": [["OrderCreated", "k9", {"from": "a step"}]]}});
    let exec = api.trigger("emitter", &input, None).await;
    assert_eq!(api.wait_terminal(&exec).await["status"], "completed");
    expected.push(format!("{exec}:emit:execute:0"));

    let got = receiver.until(expected.len(), Duration::from_secs(30)).await;
    assert_eq!(receiver.ids(), expected, "every matching event, once, in log order");
    let mut last_seq = 0;
    for r in &got {
        let header = |name: &str| r.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        let timestamp: u64 = header("sagahost-timestamp").parse().unwrap();
        assert_eq!(header("sagahost-signature"), sagahost::delivery::signature(key.as_bytes(), timestamp, &r.body));
        assert_eq!(header("sagahost-event-id"), r.json["id"].as_str().unwrap());
        assert_eq!(header("sagahost-topic"), r.json["topic"].as_str().unwrap());
        assert_eq!(
            (header("sagahost-subscription").as_str(), header("content-type").as_str()),
            ("audit", "application/json")
        );
        let seq = r.json["seq"].as_u64().unwrap();
        assert!(seq > last_seq, "in log order");
        last_seq = seq;
    }
    assert_eq!(got.last().unwrap().json["source"]["step"], "emit", "an emitted event carries its source");
    assert_eq!(got[0].json["payload"], json!({"n": 0}));

    let (_, view) = api.call(Method::GET, "/v1/subscriptions/audit", None).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut view = view;
    while view["cursor"].as_u64().unwrap() < last_seq && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        view = api.call(Method::GET, "/v1/subscriptions/audit", None).await.1;
    }
    assert!(view["cursor"].as_u64().unwrap() >= last_seq, "{view}");
    assert_eq!(view["status"]["delivered"].as_u64(), Some(expected.len() as u64), "{view}");
    assert_eq!(view["status"]["failing"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_that_is_down_is_retried_then_dead_lettered_and_redrive_delivers() {
    let (receiver, url) = Receiver::start().await;
    let (_tmp, dir) = data_dir();
    let mut host = HostProcess::start(&dir, &[]);
    let api = Api::new(&host.url);
    receiver.down.store(true, Ordering::SeqCst);
    // `brief` gives up after 3 tries; `patient` keeps trying while the target is down.
    subscribe(&api, "brief", json!({"topics": ["*"], "webhook": {"url": url}, "retry": fast_retry(3)})).await;
    let patient = json!({"max_attempts": 1000, "initial_backoff_ms": 10, "multiplier": 1.0, "max_backoff_ms": 10});
    subscribe(&api, "patient", json!({"topics": ["*"], "webhook": {"url": url}, "retry": patient})).await;
    for i in 0..3 {
        publish(&api, "Paid", &format!("p-{i}"), "k", json!({"i": i})).await;
    }
    let start = Instant::now();
    let letters = loop {
        let letters = dead_letters(&api, "brief").await;
        if letters.len() == 3 {
            break letters;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "{letters:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for (i, l) in letters.iter().enumerate() {
        assert_eq!((l["event_id"].as_str(), l["attempts"].as_u64()), (Some(format!("p-{i}").as_str()), Some(3)));
        assert!(l["error"].as_str().unwrap().contains("503"), "{l}");
    }
    assert!(receiver.ids().is_empty());
    let (_, view) = api.call(Method::GET, "/v1/subscriptions/patient", None).await;
    assert_eq!(view["status"]["failing"], true, "{view}");
    assert!(view["status"]["last_error"].as_str().unwrap().contains("503"), "{view}");

    // A crash while the target is down loses nothing: the patient subscription's cursor has
    // not passed what it could not deliver, and the dead letters are durable.
    host.kill();
    let host = HostProcess::start(&dir, &[]);
    let api = Api::new(&host.url);
    assert_eq!(dead_letters(&api, "brief").await.len(), 3);
    receiver.down.store(false, Ordering::SeqCst);
    let got = receiver.until(3, Duration::from_secs(30)).await;
    assert_eq!(receiver.ids(), ["p-0", "p-1", "p-2"], "the patient one delivers all, in order, once back");
    assert!(got.iter().all(|r| r.headers.get("sagahost-subscription").unwrap() == "patient"));

    // Redrive: each dead letter is tried once more; delivered ones leave the list.
    let (status, body) = api.call(Method::POST, "/v1/subscriptions/brief/dead-letters/redrive", None).await;
    assert_eq!((status, &body["redriving"]), (202, &json!(3)), "{body}");
    receiver.until(6, Duration::from_secs(30)).await;
    let brief: Vec<String> = receiver
        .got
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.headers.get("sagahost-subscription").unwrap() == "brief")
        .map(|r| r.json["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(brief, ["p-0", "p-1", "p-2"]);
    let start = Instant::now();
    while !dead_letters(&api, "brief").await.is_empty() {
        assert!(start.elapsed() < Duration::from_secs(10), "redriven letters stay listed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Deleting a subscription stops its deliveries.
    assert_eq!(api.call(Method::DELETE, "/v1/subscriptions/brief", None).await.0, 204);
    assert_eq!(api.call(Method::GET, "/v1/subscriptions/brief", None).await.0, 404);
    publish(&api, "Paid", "p-after", "k", json!({})).await;
    receiver.until(7, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.ids().iter().filter(|i| *i == "p-after").count(), 1, "only the patient one is left");
}

/// HTTPS webhooks trust what plugins' HTTPS trusts: the platform's roots plus
/// `--http-ca-bundle`. A certificate of an unknown CA is a failed try, named in the status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_webhooks_trust_the_configured_ca_bundle() {
    let server = crate::tls::tls_server(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n").await;
    let (tmp, dir) = data_dir();
    let bundle = tmp.path().join("ca.pem");
    std::fs::write(&bundle, &server.ca_pem).unwrap();
    let mut host = HostProcess::start(&dir, &["--http-ca-bundle", bundle.to_str().unwrap()]);
    let api = Api::new(&host.url);
    let url = format!("{}/hook", server.base);
    subscribe(&api, "secure", json!({"topics": ["*"], "webhook": {"url": url}, "retry": fast_retry(1000)})).await;
    for i in 0..3 {
        publish(&api, "Paid", &format!("tls-{i}"), "k", json!({"i": i})).await;
    }
    let delivered = |api: Api| async move { api.call(Method::GET, "/v1/subscriptions/secure", None).await.1 };
    let start = Instant::now();
    while delivered(api.clone()).await["status"]["delivered"] != 3 {
        assert!(start.elapsed() < Duration::from_secs(30), "{}", delivered(api.clone()).await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(server.answered.load(Ordering::SeqCst), 3);

    // Without the bundle the server's certificate is unknown: every try fails, saying why.
    host.terminate();
    let host = HostProcess::start(&dir, &[]);
    let api = Api::new(&host.url);
    publish(&api, "Paid", "tls-untrusted", "k", json!({})).await;
    let start = Instant::now();
    loop {
        let view = delivered(api.clone()).await;
        if view["status"]["failing"] == true {
            let error = view["status"]["last_error"].as_str().unwrap().to_owned();
            assert!(error.contains("certificate") || error.contains("UnknownIssuer"), "{error}");
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "{view}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(server.answered.load(Ordering::SeqCst), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_subscriptions_get_json_errors() {
    let (_tmp, dir) = data_dir();
    let host = HostProcess::start(&dir, &[]);
    let api = Api::new(&host.url);
    let put = |name: &'static str, body: String| {
        let api = api.clone();
        async move { api.call(Method::PUT, &format!("/v1/subscriptions/{name}"), Some(body.into_bytes())).await }
    };
    let deep = format!("{}1{}", "[".repeat(300), "]".repeat(300));
    for (name, body, status, needle) in [
        ("s", "not json".to_owned(), 400, "malformed"),
        ("s", deep, 400, "malformed"),
        ("s", r#"{"topics": ["A"], "webhook": {"url": "http://h"}, "surprise": 1}"#.to_owned(), 400, "surprise"),
        ("s", r#"{"topics": [], "webhook": {"url": "ftp://h"}}"#.to_owned(), 422, "webhook.url"),
        (
            "s",
            r#"{"topics": ["A"], "webhook": {"url": "http://h", "signing_secret": "missing"}}"#.to_owned(),
            422,
            "no secret",
        ),
        ("s", r#"{"topics": ["A"], "redis_stream": {"url": "rediss://h", "stream": "x"}}"#.to_owned(), 422, "TLS"),
        ("bad%20name", r#"{"topics": ["A"], "webhook": {"url": "http://h"}}"#.to_owned(), 422, "subscription"),
    ] {
        let (got, body) = put(name, body.clone()).await;
        assert_eq!(got, status, "{body}");
        assert!(body["error"]["message"].as_str().unwrap().contains(needle), "{needle}: {body}");
    }
    for (method, path, status) in [
        (Method::GET, "/v1/subscriptions/nope", 404),
        (Method::DELETE, "/v1/subscriptions/nope", 404),
        (Method::GET, "/v1/subscriptions/nope/dead-letters", 404),
        (Method::POST, "/v1/subscriptions/nope/dead-letters/redrive", 404),
    ] {
        let (got, body) = api.call(method, path, None).await;
        assert_eq!(got, status, "{path}: {body}");
        assert!(body["error"]["code"].is_string(), "{body}");
    }
    subscribe(&api, "ok", json!({"topics": ["A"], "webhook": {"url": "http://127.0.0.1:9/x"}})).await;
    let (got, _) = api.call(Method::GET, "/v1/subscriptions/ok/dead-letters?limit=0", None).await;
    assert_eq!(got, 400);
    let (_, list) = api.call(Method::GET, "/v1/subscriptions", None).await;
    assert_eq!(list["subscriptions"].as_array().unwrap().len(), 1, "nothing refused was stored: {list}");
}

/// The Redis to test against: `SAGAHOST_TEST_REDIS_URL` (set by `.ci/run` when 127.0.0.1:6379
/// answers). `None`, with the reason printed, when it is not set.
pub fn redis_url() -> Option<String> {
    match std::env::var("SAGAHOST_TEST_REDIS_URL") {
        Ok(url) => Some(url),
        Err(_) => {
            println!("SKIPPED: SAGAHOST_TEST_REDIS_URL is not set (no Redis configured for the tests)");
            None
        }
    }
}

/// A connection to the configured Redis; a Redis that is configured but unreachable fails
/// the test loudly.
pub async fn redis_connection(url: &str) -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(url).unwrap_or_else(|e| panic!("SAGAHOST_TEST_REDIS_URL={url}: {e}"));
    tokio::time::timeout(Duration::from_secs(5), client.get_multiplexed_async_connection())
        .await
        .unwrap_or_else(|_| panic!("Redis at {url} (SAGAHOST_TEST_REDIS_URL) did not answer"))
        .unwrap_or_else(|e| panic!("Redis at {url} (SAGAHOST_TEST_REDIS_URL) is unreachable: {e}"))
}

/// Waits (up to 30 s) until the group has no entry pending on `stream`.
async fn until_acknowledged(conn: &mut redis::aio::MultiplexedConnection, stream: &str, group: &str) {
    let start = Instant::now();
    loop {
        let pending: Vec<redis::Value> = redis::cmd("XPENDING").arg(stream).arg(group).query_async(conn).await.unwrap();
        if pending.first() == Some(&redis::Value::Int(0)) {
            return;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "entries left unacknowledged: {pending:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_streams_get_every_event_with_its_id() {
    let Some(url) = redis_url() else { return };
    let mut conn = redis_connection(&url).await;
    let stream = format!("sagahost-test-{}", uuid::Uuid::now_v7());
    let (_tmp, dir) = data_dir();
    let host = HostProcess::start(&dir, &[]);
    let api = Api::new(&host.url);
    subscribe(
        &api,
        "to-redis",
        json!({"topics": ["*"], "redis_stream": {"url": url, "stream": stream}, "from": "start"}),
    )
    .await;
    for i in 0..500 {
        publish(&api, "Shipped", &format!("s-{i}"), &format!("k{}", i % 7), json!({"i": i})).await;
    }
    let start = Instant::now();
    let entries: Vec<(String, std::collections::HashMap<String, String>)> = loop {
        let entries: Vec<(String, std::collections::HashMap<String, String>)> =
            redis::cmd("XRANGE").arg(&stream).arg("-").arg("+").query_async(&mut conn).await.unwrap();
        if entries.len() >= 500 {
            break entries;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "{} of 500 in the stream", entries.len());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let ids: Vec<&str> = entries.iter().map(|(_, f)| f["id"].as_str()).collect();
    let expected: Vec<String> = (0..500).map(|i| format!("s-{i}")).collect();
    assert_eq!(ids, expected, "every event once, in log order");
    let (_, fields) = &entries[3];
    assert_eq!((fields["topic"].as_str(), fields["key"].as_str()), ("Shipped", "k3"));
    assert_eq!(serde_json::from_str::<Value>(&fields["payload"]).unwrap(), json!({"i": 3}));
    let _: () = redis::cmd("DEL").arg(&stream).query_async(&mut conn).await.unwrap();
}

/// The Redis Streams ingress, on the real local Redis: entries become events once each (by
/// id), start the sagas they trigger, and are acknowledged only once recorded — also across a
/// kill -9 in the middle; an unusable entry is acknowledged and not recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_stream_ingress_records_every_entry_once_and_acknowledges_it() {
    let Some(url) = redis_url() else { return };
    let mut conn = redis_connection(&url).await;
    let stream = format!("sagahost-in-{}", uuid::Uuid::now_v7());
    let spec = format!("{url}?stream={stream}&group=hosts&from=start");
    let (_tmp, dir) = data_dir();
    let mut host = HostProcess::start(&dir, &["--redis-ingress", &spec]);
    let api = Api::new(&host.url);
    api.put_plugin("testkit", wasm("testkit")).await;
    api.put_saga(
        "on-order",
        &json!({"triggers": [{"topic": "OrderCreated", "key": "order_id"}],
                "steps": [{"name": "note", "plugin": "testkit@1.0.0"}]}),
    )
    .await;
    let add = |i: usize| {
        let mut cmd = redis::cmd("XADD");
        cmd.arg(&stream).arg("*").arg("topic").arg("OrderCreated").arg("id").arg(format!("in-{i}"));
        cmd.arg("payload").arg(json!({"order_id": format!("o-{i}")}).to_string());
        cmd
    };
    for i in 0..150 {
        let _: String = add(i).query_async(&mut conn).await.unwrap();
    }
    let _: String = redis::cmd("XADD")
        .arg(&stream)
        .arg("*")
        .arg("topic")
        .arg("OrderCreated")
        .arg("payload")
        .arg("{not json")
        .query_async(&mut conn)
        .await
        .unwrap();
    // Killed while reading; the rest (and a re-sent entry) after the restart.
    tokio::time::sleep(Duration::from_millis(150)).await;
    host.kill();
    let host = HostProcess::start(&dir, &["--redis-ingress", &spec]);
    let api = Api::new(&host.url);
    for i in 150..300 {
        let _: String = add(i).query_async(&mut conn).await.unwrap();
    }
    let _: String = add(7).query_async(&mut conn).await.unwrap();

    let start = Instant::now();
    let log = loop {
        let (_, log) = api.call(Method::GET, "/v1/events?limit=1000", None).await;
        let log = log["events"].as_array().unwrap().clone();
        if log.len() >= 300 {
            break log;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "{} of 300 recorded", log.len());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut ids: Vec<&str> = log.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 300, "each entry once, the unusable one not at all");
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 300);
    // Every entry is acknowledged once recorded (or refused).
    until_acknowledged(&mut conn, &stream, "hosts").await;
    // And each started its saga once.
    let start = Instant::now();
    loop {
        let (_, list) = api.call(Method::GET, "/v1/executions?saga=on-order&limit=1000", None).await;
        let n = list["executions"].as_array().unwrap().len();
        if n == 300 {
            break;
        }
        assert!(n < 300 && start.elapsed() < Duration::from_secs(60), "{n} executions");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _: () = redis::cmd("DEL").arg(&stream).query_async(&mut conn).await.unwrap();
}

/// Entries another consumer of the group read and never acknowledged (a host that is gone) are
/// taken over once idle for `claim_idle_ms`, recorded and acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_ingress_takes_over_what_a_gone_consumer_left_pending() {
    let Some(url) = redis_url() else { return };
    let mut conn = redis_connection(&url).await;
    let stream = format!("sagahost-claim-{}", uuid::Uuid::now_v7());
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&stream)
        .arg("hosts")
        .arg("0")
        .arg("MKSTREAM")
        .query_async(&mut conn)
        .await
        .unwrap();
    for i in 0..20 {
        let _: String = redis::cmd("XADD")
            .arg(&stream)
            .arg("*")
            .arg("id")
            .arg(format!("left-{i}"))
            .arg("payload")
            .arg("{}")
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    // The gone host read them all and acknowledged none.
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("hosts")
        .arg("ghost")
        .arg("COUNT")
        .arg(100)
        .arg("STREAMS")
        .arg(&stream)
        .arg(">")
        .query_async(&mut conn)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let spec = format!("{url}?stream={stream}&group=hosts&consumer=me&topic=Claimed&claim_idle_ms=200");
    let (_tmp, dir) = data_dir();
    let host = HostProcess::start(&dir, &["--redis-ingress", &spec]);
    let api = Api::new(&host.url);
    let start = Instant::now();
    loop {
        let (_, log) = api.call(Method::GET, "/v1/events?limit=100", None).await;
        let n = log["events"].as_array().unwrap().iter().filter(|e| e["topic"] == "Claimed").count();
        if n == 20 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "{n} of 20 taken over");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    until_acknowledged(&mut conn, &stream, "hosts").await;
    let _: () = redis::cmd("DEL").arg(&stream).query_async(&mut conn).await.unwrap();
}
