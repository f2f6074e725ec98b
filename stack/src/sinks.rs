//! Local stand-ins for what alerts are delivered to, speaking the real protocols over real
//! HTTP: a Slack Web API server (`chat.postMessage`, `chat.update`, incoming webhooks under
//! `/services/...`) as Slack documents it, including its per-channel rate limit of about
//! one message a second (short bursts allowed) answered with `429` and `Retry-After`; and a webhook receiver that
//! checks nunchi's HMAC signature. Both record what they received. `nunchi-stack` runs the
//! Slack server as the demo's Slack; the tests use both.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

/// One message Slack received.
#[derive(Debug, Clone)]
pub struct SlackMessage {
    /// `chat.postMessage`, `chat.update` or `webhook`.
    pub method: String,
    /// The channel (webhooks: the hook path).
    pub channel: String,
    /// The message's `ts` (for updates, the message updated).
    pub ts: String,
    /// `thread_ts`, for replies.
    pub thread_ts: Option<String>,
    /// The whole JSON body.
    pub body: Value,
    /// When it arrived.
    pub at: Instant,
}

impl SlackMessage {
    /// The body's `text` and every block's text, joined.
    pub fn all_text(&self) -> String {
        let mut out = self.body["text"].as_str().unwrap_or_default().to_owned();
        collect_text(&self.body["blocks"], &mut out);
        out
    }
}

fn collect_text(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(s)) = m.get("text") {
                out.push('\n');
                out.push_str(s);
            }
            for (k, x) in m {
                if k != "text" || !x.is_string() {
                    collect_text(x, out);
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| collect_text(x, out)),
        _ => {}
    }
}

#[derive(Default)]
struct SlackState {
    messages: Vec<SlackMessage>,
    buckets: HashMap<String, (f64, Instant)>,
    force_429: u32,
    rejected_429: u32,
    unlimited: bool,
    plain_ok: bool,
    seq: u64,
}

impl SlackState {
    /// Keeps a message and logs it as Slack would have shown it.
    fn record(&mut self, m: SlackMessage) {
        let text = m.all_text();
        let first = text.lines().find(|l| !l.is_empty()).unwrap_or_default();
        tracing::info!(method = %m.method, channel = %m.channel, text = %first, "slack");
        self.messages.push(m);
    }
}

/// A local Slack API.
#[derive(Clone)]
pub struct SlackServer {
    /// Base URL of the Web API (`http://127.0.0.1:PORT/api`).
    pub api_url: String,
    /// Base URL for incoming webhooks (append `/services/T/B/X`).
    pub base_url: String,
    /// The bot token it accepts.
    pub token: String,
    state: Arc<Mutex<SlackState>>,
}

impl SlackServer {
    /// Starts on a free loopback port.
    pub async fn start() -> SlackServer {
        let state = Arc::new(Mutex::new(SlackState::default()));
        let token = "xoxb-nunchi-test-token".to_owned();
        let app = Router::new()
            .route("/api/{method}", post(slack_api))
            .route("/services/{*path}", post(slack_webhook))
            .with_state((state.clone(), token.clone()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr: SocketAddr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        SlackServer {
            api_url: format!("http://{addr}/api"),
            base_url: format!("http://{addr}"),
            token,
            state,
        }
    }

    /// Everything received so far.
    pub fn messages(&self) -> Vec<SlackMessage> {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .messages
            .clone()
    }

    /// Answers the next `n` messages with 429 and `Retry-After: 1`.
    pub fn force_rate_limit(&self, n: u32) {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .force_429 = n;
    }

    /// Turns Slack's per-channel rate limit on (the default) or off.
    pub fn set_rate_limited(&self, on: bool) {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .unlimited = !on;
    }

    /// Answers accepted messages as incoming-webhook proxies do, `200` with a bare `ok` and
    /// no `Content-Type`, instead of Slack's JSON (`on`), or as Slack does again.
    pub fn answer_plain_ok(&self, on: bool) {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .plain_ok = on;
    }

    /// How many requests were answered 429.
    pub fn rate_limited(&self) -> u32 {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .rejected_429
    }
}

type SlackCtx = (Arc<Mutex<SlackState>>, String);

/// `200` with the body `ok` and no `Content-Type`.
fn plain_ok() -> Response {
    let mut r = "ok".into_response();
    r.headers_mut().remove(axum::http::header::CONTENT_TYPE);
    r
}

fn too_many() -> Response {
    (
        StatusCode::TOO_MANY_REQUESTS,
        [("retry-after", "1"), ("content-type", "application/json")],
        r#"{"ok":false,"error":"ratelimited"}"#,
    )
        .into_response()
}

/// Whether `channel` may post now: Slack's about one message a second per channel with
/// short bursts (a bucket of 3, refilled at one a second, 10% slack for timer jitter), or
/// a forced 429.
fn admit(st: &mut SlackState, channel: &str) -> bool {
    if st.force_429 > 0 {
        st.force_429 -= 1;
        st.rejected_429 += 1;
        return false;
    }
    if st.unlimited {
        return true;
    }
    let now = Instant::now();
    let (tokens, at) = st.buckets.get(channel).copied().unwrap_or((3.0, now));
    let tokens = (tokens + now.duration_since(at).as_secs_f64() * 1.1).min(3.0);
    if tokens < 1.0 {
        st.buckets.insert(channel.to_owned(), (tokens, now));
        st.rejected_429 += 1;
        return false;
    }
    st.buckets.insert(channel.to_owned(), (tokens - 1.0, now));
    true
}

async fn slack_api(
    State((state, token)): State<SlackCtx>,
    Path(method): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let ok_json = |v: Value| (StatusCode::OK, axum::Json(v)).into_response();
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if auth != format!("Bearer {token}") {
        return ok_json(json!({"ok": false, "error": "invalid_auth"}));
    }
    let body: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(_) => return ok_json(json!({"ok": false, "error": "invalid_json"})),
    };
    let Some(channel) = body["channel"].as_str().map(str::to_owned) else {
        return ok_json(json!({"ok": false, "error": "channel_not_found"}));
    };
    if body["text"].as_str().is_none() && body["blocks"].is_null() && body["attachments"].is_null()
    {
        return ok_json(json!({"ok": false, "error": "no_text"}));
    }
    let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
    match method.as_str() {
        "chat.postMessage" => {
            if !admit(&mut st, &channel) {
                return too_many();
            }
            st.seq += 1;
            let ts = format!("1700000000.{:06}", st.seq);
            st.record(SlackMessage {
                method,
                channel: channel.clone(),
                ts: ts.clone(),
                thread_ts: body["thread_ts"].as_str().map(str::to_owned),
                body: body.clone(),
                at: Instant::now(),
            });
            if st.plain_ok {
                return plain_ok();
            }
            ok_json(
                json!({"ok": true, "channel": channel, "ts": ts, "message": {"type": "message", "ts": ts, "text": body["text"], "user": "U0NUNCHI", "bot_id": "B0NUNCHI"}}),
            )
        }
        "chat.update" => {
            let Some(ts) = body["ts"].as_str().map(str::to_owned) else {
                return ok_json(json!({"ok": false, "error": "message_not_found"}));
            };
            if !st
                .messages
                .iter()
                .any(|m| m.ts == ts && m.method == "chat.postMessage")
            {
                return ok_json(json!({"ok": false, "error": "message_not_found"}));
            }
            if !admit(&mut st, &channel) {
                return too_many();
            }
            st.record(SlackMessage {
                method,
                channel: channel.clone(),
                ts: ts.clone(),
                thread_ts: None,
                body: body.clone(),
                at: Instant::now(),
            });
            ok_json(
                json!({"ok": true, "channel": channel, "ts": ts, "text": body["text"], "message": {"text": body["text"], "user": "U0NUNCHI"}}),
            )
        }
        _ => ok_json(json!({"ok": false, "error": "unknown_method"})),
    }
}

async fn slack_webhook(
    State((state, _)): State<SlackCtx>,
    Path(path): Path<String>,
    body: Bytes,
) -> Response {
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return (StatusCode::BAD_REQUEST, "invalid_payload").into_response();
    };
    if body["text"].as_str().is_none() && body["blocks"].is_null() && body["attachments"].is_null()
    {
        return (StatusCode::BAD_REQUEST, "no_text").into_response();
    }
    let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
    if !admit(&mut st, &path) {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", "1")],
            "rate_limited",
        )
            .into_response();
    }
    st.record(SlackMessage {
        method: "webhook".into(),
        channel: path,
        ts: String::new(),
        thread_ts: None,
        body,
        at: Instant::now(),
    });
    if st.plain_ok {
        return plain_ok();
    }
    (StatusCode::OK, [("content-type", "text/plain")], "ok").into_response()
}

/// One request a webhook receiver got.
#[derive(Debug, Clone)]
pub struct WebhookRequest {
    /// The path.
    pub path: String,
    /// The JSON body.
    pub body: Value,
    /// Whether the signature checked out (false also when there was none).
    pub signature_ok: bool,
    /// When it arrived.
    pub at: Instant,
}

#[derive(Default)]
struct HookState {
    received: Vec<WebhookRequest>,
    failing: bool,
    attempts: u32,
    unsigned_ok: bool,
}

/// A local webhook receiver that verifies `X-Nunchi-Signature`.
#[derive(Clone)]
pub struct WebhookReceiver {
    /// Its base URL.
    pub url: String,
    state: Arc<Mutex<HookState>>,
}

/// Checks `sha256=hex(HMAC-SHA256(secret, "<ts>.<body>"))`.
pub fn verify_signature(secret: &str, timestamp: &str, body: &[u8], signature: &str) -> bool {
    use hmac::Mac;
    let Some(hex_sig) = signature.strip_prefix("sha256=") else {
        return false;
    };
    let Ok(bytes) = hex::decode(hex_sig) else {
        return false;
    };
    let Ok(mut mac) = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()) else {
        return false;
    };
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&bytes).is_ok()
}

impl WebhookReceiver {
    /// Starts on a free loopback port, checking signatures made with `secret`.
    pub async fn start(secret: &str) -> WebhookReceiver {
        let state = Arc::new(Mutex::new(HookState::default()));
        let secret = secret.to_owned();
        let st = state.clone();
        let app = Router::new().route(
            "/{*path}",
            post(
                move |Path(path): Path<String>, headers: HeaderMap, body: Bytes| {
                    let st = st.clone();
                    let secret = secret.clone();
                    async move {
                        let mut s = st.lock().unwrap_or_else(|p| p.into_inner());
                        s.attempts += 1;
                        if s.failing {
                            return (StatusCode::SERVICE_UNAVAILABLE, "down for maintenance")
                                .into_response();
                        }
                        let h = |n: &str| {
                            headers
                                .get(n)
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("")
                                .to_owned()
                        };
                        let ok = verify_signature(
                            &secret,
                            &h("x-nunchi-timestamp"),
                            &body,
                            &h("x-nunchi-signature"),
                        );
                        let Ok(json) = serde_json::from_slice(&body) else {
                            return (StatusCode::BAD_REQUEST, "not JSON").into_response();
                        };
                        s.received.push(WebhookRequest {
                            path,
                            body: json,
                            signature_ok: ok,
                            at: Instant::now(),
                        });
                        if ok {
                            StatusCode::OK.into_response()
                        } else {
                            (StatusCode::UNAUTHORIZED, "bad signature").into_response()
                        }
                    }
                },
            ),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        WebhookReceiver {
            url: format!("http://{addr}"),
            state,
        }
    }

    /// What was received (accepted or not).
    pub fn received(&self) -> Vec<WebhookRequest> {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .received
            .clone()
    }

    /// Every request, including refused ones.
    pub fn attempts(&self) -> u32 {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .attempts
    }

    /// Accepts requests without a valid signature too (for senders that cannot sign,
    /// such as Alertmanager); `signature_ok` still tells.
    pub fn accept_unsigned(&self) {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .unsigned_ok = true;
    }

    /// While set, answers 503 to everything.
    pub fn set_failing(&self, failing: bool) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).failing = failing;
    }
}
