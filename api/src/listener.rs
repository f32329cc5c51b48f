//! The API's accept loop: every connection is served by hyper — HTTP/1.1, or
//! HTTP/2 cleartext with prior knowledge (h2c) — around the poem endpoint,
//! SSE streams included.
//!
//! Our own loop rather than `poem::Server`, for what poem does not expose: a
//! listen backlog of [`LISTEN_BACKLOG`], `TCP_NODELAY` on every socket, and
//! hyper's connection settings, which decide what an idle SSE stream costs
//! (docs/benchmarks.md, `sse_fanout`; docs/decisions/0001-sse-through-hyper.md).

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use poem::endpoint::BoxEndpoint;
use poem::http::uri::Scheme;
use poem::web::{LocalAddr, RemoteAddr};
use poem::{Addr, Endpoint};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Pending connections the kernel may queue before `accept` (capped by
/// `net.core.somaxconn`). `TcpListener::bind` asks for 128, which a burst of
/// clients (thousands of SSE streams reconnecting at once) overflows: each
/// dropped SYN costs its client a one-second retransmit.
pub const LISTEN_BACKLOG: u32 = 4096;

/// A client that has sent nothing this long after connecting is dropped.
const FIRST_BYTES_WAIT: Duration = Duration::from_secs(30);

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

/// Serves `app` until `shutdown` resolves: then stops accepting, flips `stop`
/// (SSE streams say `disconnecting` and end; every connection finishes what it
/// is answering and closes), waits up to `grace` for the connections, and
/// returns, dropping whatever is still open.
pub async fn serve(
    listener: TcpListener,
    app: BoxEndpoint<'static>,
    shutdown: impl Future<Output = ()>,
    stop: watch::Sender<bool>,
    grace: Duration,
) -> std::io::Result<()> {
    let local = LocalAddr(Addr::SocketAddr(listener.local_addr()?));
    let app = Arc::new(app);
    let http = Arc::new(connection_builder());
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
        // Small frames must not wait for the client's delayed ACK (Nagle).
        let _ = tcp.set_nodelay(true);
        let (app, local, remote) = (app.clone(), local.clone(), RemoteAddr(Addr::SocketAddr(peer)));
        let service = hyper::service::service_fn(move |request| {
            let (app, local, remote) = (app.clone(), local.clone(), remote.clone());
            // Boxed: an HTTP/1 connection keeps room for one request's future
            // for its whole life, and poem's is large; boxed, that room is a
            // pointer, and the future is freed once it has answered (an SSE
            // stream's body lives on in hyper, not in this future).
            async move {
                let response = app.get_response(poem::Request::from((request, local, remote, Scheme::HTTP))).await;
                Ok::<_, Infallible>(hyper::Response::from(response))
            }
            .boxed()
        });
        connections.spawn(serve_connection(http.clone(), tcp, service, stop.subscribe()));
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

/// What poem hands hyper as a response body.
type ResponseBody = http_body_util::combinators::BoxBody<bytes::Bytes, std::io::Error>;

/// One connection, until it closes; once `stopping` flips, it finishes the
/// request it is answering (HTTP/2: its open streams) and closes.
async fn serve_connection<S>(
    http: Arc<auto::Builder<TokioExecutor>>,
    tcp: TcpStream,
    service: S,
    mut stopping: watch::Receiver<bool>,
) where
    S: hyper::service::Service<
            hyper::Request<hyper::body::Incoming>,
            Response = hyper::Response<ResponseBody>,
            Error = Infallible,
            Future: Send + 'static,
        >,
{
    // hyper's head timeout starts once it has seen the protocol's first bytes:
    // until then, a client that sends nothing is ours to drop.
    tokio::select! {
        ready = tokio::time::timeout(FIRST_BYTES_WAIT, tcp.readable()) => if !matches!(ready, Ok(Ok(()))) { return },
        _ = stopping.wait_for(|stop| *stop) => return,
    }
    let connection = http.serve_connection(TokioIo::new(tcp), service);
    tokio::pin!(connection);
    tokio::select! {
        ended = connection.as_mut() => return log_end(ended),
        _ = stopping.wait_for(|stop| *stop) => {}
    }
    connection.as_mut().graceful_shutdown();
    log_end(connection.await);
}

fn log_end(ended: Result<(), Box<dyn std::error::Error + Send + Sync>>) {
    if let Err(error) = ended {
        tracing::debug!(%error, "connection ended");
    }
}

/// hyper's settings for every connection (HTTP/1.1 and h2c).
fn connection_builder() -> auto::Builder<TokioExecutor> {
    let mut http = auto::Builder::new(TokioExecutor::new());
    http.http1()
        // hyper's 30 s limit on reading a request head (idle keep-alive
        // connections included) needs a timer to take effect.
        .timer(TokioTimer::new())
        // Stream frames are `Bytes` shared by every stream of a session:
        // written with `writev`, never copied into a per-connection buffer.
        .writev(true);
    // `max_buf_size` stays hyper's default: its 8 KB minimum would keep an
    // idle stream's read buffer from doubling, but a request head over 8 KB
    // would get hyper's bare 431 instead of our problem+json (decision 0001).
    http
}
