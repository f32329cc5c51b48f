//! Listeners queue a burst of connections instead of dropping them: the API
//! and the simulator bind with a deep backlog (`api::listener::bind`,
//! `turnstone_llmsim::bind`). With tokio's default of 128, a worker opening
//! a thousand model streams at once lost SYNs, and each cost its turn a
//! one-second retransmit (docs/benchmarks.md, `concurrency`).

use std::time::Duration;

use futures::StreamExt;
use tokio::net::{TcpListener, TcpStream};

/// Connections opened at once, none accepted yet: far over 128, under the
/// usual 1,024 open-file limit (the queued server sides hold no fd), and
/// under `net.core.somaxconn`, which caps any backlog (4,096 by default
/// since Linux 5.4).
const BURST: usize = 600;

/// Opens `BURST` connections to a listener that accepts nothing meanwhile
/// and counts those that connected. With a shallow queue the rest stay
/// unanswered (their SYNs are dropped while the queue is full) until the
/// bound below, which only limits how long a failing run takes.
async fn connected_while_not_accepting(listener: &TcpListener) -> usize {
    let addr = listener.local_addr().unwrap();
    let streams: Vec<Option<TcpStream>> = futures::stream::iter(0..BURST)
        .map(|_| async move { tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr)).await.ok()?.ok() })
        .buffer_unordered(BURST)
        .collect()
        .await;
    streams.iter().filter(|s| s.is_some()).count()
}

#[tokio::test]
async fn the_api_and_the_simulator_queue_a_burst_of_connections() {
    let api = turnstone_api::listener::bind("127.0.0.1:0").await.unwrap();
    assert_eq!(connected_while_not_accepting(&api).await, BURST, "the API's listener dropped connections");
    let sim = turnstone_llmsim::bind("127.0.0.1:0").await.unwrap();
    assert_eq!(connected_while_not_accepting(&sim).await, BURST, "the simulator's listener dropped connections");
}
