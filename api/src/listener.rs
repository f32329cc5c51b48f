//! The API's accept loop. Every request is served by hyper and the poem
//! endpoint, except one kind: a well-formed request for a session's SSE
//! stream, which is answered by a small writer of its own once the request is
//! known to succeed.
//!
//! Why: an idle SSE client otherwise keeps hyper's HTTP/1 connection alive for
//! its whole life — read and write buffers, connection state, poem's body
//! adapter — about 32 KB, twice the per-connection budget (docs/benchmarks.md,
//! `sse_fanout`), and every frame is formatted again for every client. The
//! writer here keeps the socket, the stream's state and a timer; frames of
//! stored events are written from bytes rendered once per session.
//!
//! The request head is only *peeked* (`TcpStream::peek`) until the stream is
//! certain to open: anything unusual (other routes, a body, pipelining, an
//! unknown query parameter, two credentials, a head split over packets) and
//! every missing or wrong key leaves the connection untouched for hyper and
//! poem, which answer it as before. A request that fails once its key was
//! accepted (unknown session or resume id, no stream slot) gets the same
//! problem+json answer, served by hyper, without checking the key twice.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures::FutureExt;
use futures::StreamExt;
use futures::stream::BoxStream;
use hyper_util::rt::{TokioExecutor, TokioIo};
use poem::endpoint::BoxEndpoint;
use poem::http::uri::Scheme;
use poem::web::{LocalAddr, RemoteAddr};
use poem::{Addr, Endpoint, IntoResponse, Response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::AppState;
use crate::wire::StreamFrame;

/// Bytes of a request head looked at for the SSE route; longer heads go to hyper.
const MAX_PEEK: usize = 4096;
/// A client that has sent nothing this long after connecting is dropped.
const FIRST_BYTES_WAIT: Duration = Duration::from_secs(30);
/// Frames gathered into one write at most.
const MAX_WRITE: usize = 64 * 1024;

/// Pending connections the kernel may queue before `accept` (capped by
/// `net.core.somaxconn`). `TcpListener::bind` asks for 128, which a burst of
/// clients (thousands of SSE streams reconnecting at once) overflows: each
/// dropped SYN costs its client a one-second retransmit.
pub const LISTEN_BACKLOG: u32 = 4096;

/// Binds `addr` (the first address it resolves to) with [`LISTEN_BACKLOG`].
pub async fn bind(addr: &str) -> std::io::Result<TcpListener> {
    let addr = tokio::net::lookup_host(addr)
        .await?
        .next()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{addr} resolves to no address")))?;
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Serves until `shutdown` resolves: then stops accepting, flips `stop` (SSE
/// streams say `disconnecting` and end), lets requests in flight finish for
/// up to `grace`, and returns.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()>,
    stop: watch::Sender<bool>,
    grace: Duration,
) -> std::io::Result<()> {
    let local = LocalAddr(Addr::SocketAddr(listener.local_addr()?));
    let app = Arc::new(crate::endpoint(state.clone()));
    let mut connections = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        while connections.try_join_next().is_some() {}
        let conn = Connection { state: state.clone(), app: app.clone(), local: local.clone(), peer, stopping: stop.subscribe() };
        connections.spawn(conn.run(tcp));
    }
    drop(listener);
    tracing::info!("draining: SSE streams disconnect, requests in flight complete");
    let _ = stop.send(true);
    let drained = tokio::time::timeout(grace, async { while connections.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(remaining = connections.len(), "shutdown grace elapsed; closing the remaining connections");
    }
    Ok(())
}

struct Connection {
    state: AppState,
    app: Arc<BoxEndpoint<'static>>,
    local: LocalAddr,
    peer: SocketAddr,
    stopping: watch::Receiver<bool>,
}

/// What the peeked request head asks for.
enum Route {
    /// An SSE stream that opened: the head's length (to consume) and its frames.
    Stream(usize, BoxStream<'static, StreamFrame>),
    /// A stream request that failed after its key was accepted: this answer, through hyper.
    Answer(Response),
    /// Anything else: hyper and poem.
    App,
    /// The client went away (or never spoke) before a request arrived.
    Gone,
}

impl Connection {
    async fn run(mut self, tcp: TcpStream) {
        // Small frames must not wait for the client's delayed ACK (Nagle).
        let _ = tcp.set_nodelay(true);
        // Each phase boxed: a task is as large as its largest state, and a
        // stream must not carry the routing phase's database futures (or
        // hyper's) for its whole life.
        match Box::pin(self.route(&tcp)).await {
            Route::Stream(head_len, frames) => write_stream(tcp, head_len, frames, self.state.config.sse_heartbeat).await,
            Route::Answer(answer) => Box::pin(self.hyper(tcp, Some(answer))).await,
            Route::App => Box::pin(self.hyper(tcp, None)).await,
            Route::Gone => {}
        }
    }

    async fn route(&mut self, tcp: &TcpStream) -> Route {
        let mut buf = vec![0u8; MAX_PEEK];
        let mut n = tokio::select! {
            peeked = tcp.peek(&mut buf) => match peeked {
                Ok(0) | Err(_) => return Route::Gone,
                Ok(n) => n,
            },
            _ = tokio::time::sleep(FIRST_BYTES_WAIT) => return Route::Gone,
            _ = self.stopping.wait_for(|s| *s) => return Route::Gone,
        };
        if !buf.starts_with(b"GET /v1/sessions/") {
            return Route::App;
        }
        // A head split over packets: give the rest a moment, then leave it to hyper.
        for _ in 0..3 {
            if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") || n == MAX_PEEK {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
            n = match tcp.peek(&mut buf).await {
                Ok(n) if n > 0 => n,
                _ => return Route::Gone,
            };
        }
        let Some(ask) = StreamAsk::parse(&buf[..n]) else { return Route::App };
        drop(buf);
        let principal = match crate::auth::principal_for(&self.state, &ask.key).await {
            Ok(p) => p,
            // A wrong key is answered by poem like every other 401.
            Err(crate::error::ApiError::Unauthorized(_)) => return Route::App,
            Err(e) => return Route::Answer(e.into_response()),
        };
        match crate::sse::prepare(&self.state, principal, &ask.session, ask.last_event_id, ask.since_id).await {
            Ok((session, after, permit)) => {
                tracing::debug!(peer = %self.peer, "SSE stream served by the listener's writer");
                Route::Stream(ask.head_len, crate::sse::open(self.state.clone(), principal, session, after, permit))
            }
            Err(e) => Route::Answer(e.into_response()),
        }
    }

    /// hyper and poem; `first`, when set, answers the connection's first request.
    async fn hyper(mut self, tcp: TcpStream, first: Option<Response>) {
        let (app, local, remote) = (self.app.clone(), self.local.clone(), RemoteAddr(Addr::SocketAddr(self.peer)));
        let first = Arc::new(Mutex::new(first));
        let service = hyper::service::service_fn(move |request| {
            let (app, local, remote) = (app.clone(), local.clone(), remote.clone());
            let answer = first.lock().expect("first answer lock").take();
            async move {
                let response = match answer {
                    Some(answer) => answer,
                    None => app.get_response(poem::Request::from((request, local, remote, Scheme::HTTP))).await,
                };
                Ok::<_, Infallible>(hyper::Response::from(response))
            }
        });
        let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        let connection = builder.serve_connection_with_upgrades(TokioIo::new(tcp), service);
        tokio::pin!(connection);
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%error, peer = %self.peer, "connection ended");
                }
                return;
            }
            _ = self.stopping.wait_for(|s| *s) => {}
        }
        connection.as_mut().graceful_shutdown();
        let _ = connection.await;
    }
}

/// A request for `GET /v1/sessions/{id}/sse` in the only shapes the writer takes.
struct StreamAsk {
    head_len: usize,
    session: String,
    key: String,
    last_event_id: Option<String>,
    since_id: Option<String>,
}

impl StreamAsk {
    fn parse(buf: &[u8]) -> Option<StreamAsk> {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        let httparse::Status::Complete(head_len) = req.parse(buf).ok()? else { return None };
        // Bytes after the head (a body, a pipelined request) are hyper's business.
        if head_len != buf.len() || req.method != Some("GET") || req.version != Some(1) {
            return None;
        }
        let (path, query) = req.path?.split_once('?').unwrap_or((req.path?, ""));
        let session = path.strip_prefix("/v1/sessions/")?.strip_suffix("/sse")?;
        if !plain(session) {
            return None;
        }
        let (mut since_id, mut access_token) = (None, None);
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=')?;
            let slot = match name {
                "since_id" => &mut since_id,
                "access_token" => &mut access_token,
                _ => return None,
            };
            if !plain(value) || slot.replace(value.to_owned()).is_some() {
                return None;
            }
        }
        let (mut bearer, mut last_event_id) = (None, None);
        for h in req.headers.iter() {
            let value = std::str::from_utf8(h.value).ok()?;
            let (slot, value) = if h.name.eq_ignore_ascii_case("authorization") {
                let token = value.strip_prefix("Bearer ")?;
                if !plain(token) {
                    return None;
                }
                (&mut bearer, token)
            } else if h.name.eq_ignore_ascii_case("last-event-id") {
                (&mut last_event_id, value)
            } else if ["content-length", "transfer-encoding", "upgrade", "expect"].iter().any(|n| h.name.eq_ignore_ascii_case(n))
            {
                return None;
            } else {
                continue;
            };
            if slot.replace(value.to_owned()).is_some() {
                return None;
            }
        }
        let key = match (bearer, access_token) {
            (Some(key), None) | (None, Some(key)) => key,
            _ => return None,
        };
        Some(StreamAsk { head_len, session: session.to_owned(), key, last_event_id, since_id })
    }
}

/// Ids, keys and tokens as issued: letters, digits, `_` and `-` (nothing to decode).
fn plain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 256 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Writes an opened stream as HTTP/1.1 chunks until it ends, the client goes
/// away or a write fails; comment heartbeats keep idle connections open.
async fn write_stream(mut tcp: TcpStream, head_len: usize, mut frames: BoxStream<'static, StreamFrame>, heartbeat: Duration) {
    let mut head = vec![0u8; head_len];
    if tcp.read_exact(&mut head).await.is_err() {
        return;
    }
    drop(head);
    let mut out = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nx-accel-buffering: no\r\ncache-control: no-cache\r\n\
         transfer-encoding: chunked\r\ndate: {}\r\n\r\n",
        httpdate::fmt_http_date(SystemTime::now())
    )
    .into_bytes();
    let mut beat = tokio::time::interval_at(tokio::time::Instant::now() + heartbeat, heartbeat);
    // After a write that blocked on a slow client, one heartbeat, not a burst.
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if !out.is_empty() {
            if tcp.write_all(&out).await.is_err() {
                return;
            }
            // Idle streams keep no buffer.
            out = Vec::new();
        }
        tokio::select! {
            frame = frames.next() => match frame {
                Some(frame) => {
                    chunk(&mut out, &crate::sse::frame_bytes(&frame));
                    // Whatever else is ready goes in the same write.
                    let mut ended = false;
                    while out.len() < MAX_WRITE {
                        match frames.next().now_or_never() {
                            Some(Some(frame)) => chunk(&mut out, &crate::sse::frame_bytes(&frame)),
                            Some(None) => {
                                ended = true;
                                break;
                            }
                            None => break,
                        }
                    }
                    if ended {
                        out.extend_from_slice(b"0\r\n\r\n");
                        let _ = tcp.write_all(&out).await;
                        let _ = tcp.shutdown().await;
                        return;
                    }
                }
                None => {
                    let _ = tcp.write_all(b"0\r\n\r\n").await;
                    let _ = tcp.shutdown().await;
                    return;
                }
            },
            _ = beat.tick() => chunk(&mut out, b":\n\n"),
            _ = client_gone(&tcp) => return,
        }
    }
}

/// Appends one HTTP/1.1 chunk.
fn chunk(out: &mut Vec<u8>, data: &[u8]) {
    out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// Resolves when the client closes its side (or the socket fails). Anything
/// it sends meanwhile is read and dropped: a stream answers one request.
async fn client_gone(tcp: &TcpStream) {
    loop {
        if tcp.readable().await.is_err() {
            return;
        }
        let mut sink = [0u8; 256];
        match tcp.try_read(&mut sink) {
            Ok(0) => return,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(_) => return,
        }
    }
}
