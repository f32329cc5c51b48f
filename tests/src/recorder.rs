//! A recording OpenAI-compatible endpoint: a real HTTP server that keeps the
//! body of every chat-completions request and forwards it to an upstream (the
//! simulator), answering with the upstream's status, type and body. Tests read
//! back exactly what a worker sent the model.

use std::sync::{Arc, Mutex};

use poem::http::StatusCode;
use poem::web::{Data, Json};
use poem::{EndpointExt, Response, Route, handler, post};
use serde_json::Value;
use tokio::sync::oneshot;

/// A running recorder; stopped when dropped.
pub struct Recorder {
    /// The base URL to register as a provider's `base_url` (ends in `/v1`).
    pub base_url: String,
    requests: Arc<Mutex<Vec<Value>>>,
    _stop: oneshot::Sender<()>,
}

struct Upstream {
    url: String,
    http: reqwest::Client,
    requests: Arc<Mutex<Vec<Value>>>,
}

#[handler]
async fn chat_completions(Data(up): Data<&Arc<Upstream>>, Json(body): Json<Value>) -> Response {
    up.requests.lock().expect("recorder lock").push(body.clone());
    let reply = match up.http.post(format!("{}/chat/completions", up.url)).json(&body).send().await {
        Ok(reply) => reply,
        Err(e) => return Response::builder().status(StatusCode::BAD_GATEWAY).body(e.to_string()),
    };
    let status = StatusCode::from_u16(reply.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let content_type = reply.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let bytes = reply.bytes().await.unwrap_or_default();
    Response::builder().status(status).content_type(content_type).body(bytes.to_vec())
}

impl Recorder {
    /// Starts on a free loopback port, forwarding to `upstream_base_url` (…`/v1`).
    pub async fn start(upstream_base_url: &str) -> Recorder {
        let requests = Arc::new(Mutex::new(Vec::new()));
        let upstream =
            Arc::new(Upstream { url: upstream_base_url.to_owned(), http: reqwest::Client::new(), requests: requests.clone() });
        let app = Route::new().at("/v1/chat/completions", post(chat_completions)).data(upstream);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the recorder");
        let addr = listener.local_addr().expect("recorder address");
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let acceptor = poem::listener::TcpAcceptor::from_tokio(listener).expect("acceptor");
            let _ = poem::Server::new_with_acceptor(acceptor)
                .run_with_graceful_shutdown(app, async move { drop(stopped.await) }, None)
                .await;
        });
        Recorder { base_url: format!("http://{addr}/v1"), requests, _stop: stop }
    }

    /// Every request body received so far, in arrival order.
    pub fn requests(&self) -> Vec<Value> {
        self.requests.lock().expect("recorder lock").clone()
    }
}
