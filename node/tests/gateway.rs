//! The gateway's bound on bodies in flight: a client that stops reading keeps its slot, the
//! next one over the limit gets `503` at once, and a slot comes back when a client leaves.

mod common;

use std::{
    io::{Read, Write},
    net::TcpStream,
    sync::Arc,
    time::Duration,
};

use commons_node::{gateway::Gateway, store::NoProgress, Store, StoreOptions};

fn get(addr: std::net::SocketAddr, path: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    s
}

/// Serves `gateway` on a free loopback port; returns the port's address.
async fn serve(gateway: Gateway) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(gateway.serve(listener));
    addr
}

fn status(s: &mut TcpStream) -> String {
    let mut head = [0u8; 12];
    s.read_exact(&mut head).expect("status line");
    String::from_utf8_lossy(&head[9..12]).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_over_its_response_limit_answers_busy_and_recovers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store =
        Arc::new(Store::open(dir.path().join("store"), StoreOptions::default()).expect("store"));
    // Bigger than what loopback socket buffers and the body queue absorb, so a client that
    // reads nothing keeps its response (and its slot) busy.
    let file = dir.path().join("big.bin");
    std::fs::write(&file, common::pattern(24 << 20, 5)).expect("write");
    let hash = store.add_file(&file, &NoProgress).expect("add").hash;
    let addr = serve(Gateway::new(store, None).with_max_responses(1)).await;
    let path = format!("/blob/{hash}");

    let blocked = tokio::task::spawn_blocking(move || {
        let mut stalled = get(addr, &path);
        assert_eq!(status(&mut stalled), "200");
        std::thread::sleep(Duration::from_millis(300));
        let mut second = get(addr, &path);
        assert_eq!(status(&mut second), "503", "over the limit: busy at once");
        let mut rest = String::new();
        let _ = second.read_to_string(&mut rest);
        assert!(rest.to_ascii_lowercase().contains("retry-after"), "{rest}");
        drop(stalled);
        // The slot returns once the stalled response notices its client is gone.
        let mut third = None;
        for _ in 0..50 {
            std::thread::sleep(Duration::from_millis(100));
            let mut s = get(addr, &path);
            if status(&mut s) == "200" {
                third = Some(s);
                break;
            }
        }
        let mut third = third.expect("a slot came back");
        let mut body = Vec::new();
        third.read_to_end(&mut body).expect("read");
        assert!(
            body.len() > 24 << 20,
            "the whole file (and headers) arrived: {} bytes",
            body.len()
        );
    });
    blocked.await.expect("client side");
}

/// A gateway over an empty store on a free loopback port.
async fn empty_gateway(header_timeout: Duration) -> (tempfile::TempDir, std::net::SocketAddr) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store =
        Arc::new(Store::open(dir.path().join("store"), StoreOptions::default()).expect("store"));
    let addr = serve(Gateway::new(store, None).with_header_timeout(header_timeout)).await;
    (dir, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_trickling_its_request_head_is_cut_off() {
    let (_dir, addr) = empty_gateway(Duration::from_millis(500)).await;
    tokio::task::spawn_blocking(move || {
        let mut slow = TcpStream::connect(addr).expect("connect");
        slow.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        // One byte at a time, slower than the head may take in all.
        let started = std::time::Instant::now();
        for b in b"GET /blob/x HTTP/1.1\r\nHost: x\r\n".iter() {
            if slow.write_all(&[*b]).is_err() {
                break; // closed by the gateway
            }
            std::thread::sleep(Duration::from_millis(100));
            if started.elapsed() > Duration::from_secs(3) {
                break;
            }
        }
        let mut rest = Vec::new();
        // Closed (reset, or an end of stream), never answered as if the head had come.
        let read = slow.read_to_end(&mut rest);
        let answered = read.is_ok() && String::from_utf8_lossy(&rest).contains(" 404 ");
        assert!(!answered, "the connection was closed, not answered");
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "closed soon after the header timeout, not kept"
        );
    })
    .await
    .expect("client");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_address_holds_at_most_its_share_of_connections() {
    use commons_node::gateway::MAX_CONNECTIONS_PER_IP;
    let (_dir, addr) = empty_gateway(Duration::from_secs(60)).await;
    tokio::task::spawn_blocking(move || {
        // Idle connections up to the limit: each keeps its slot (the head timeout is long).
        let held: Vec<TcpStream> = (0..MAX_CONNECTIONS_PER_IP)
            .map(|_| TcpStream::connect(addr).expect("connect"))
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        // One more from the same address is closed at once, unanswered.
        let mut extra = TcpStream::connect(addr).expect("connect");
        extra
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        // The write may fail already: the gateway may have closed it by then.
        let _ = extra.write_all(b"GET /blob/x HTTP/1.1\r\nHost: x\r\n\r\n");
        let mut rest = Vec::new();
        let read = extra.read_to_end(&mut rest);
        assert!(
            read.is_err() || rest.is_empty(),
            "over the limit: closed, got {:?}",
            String::from_utf8_lossy(&rest)
        );
        // A slot comes back when a client leaves.
        drop(held);
        std::thread::sleep(Duration::from_millis(300));
        let mut again = get(addr, "/blob/x");
        assert_eq!(status(&mut again), "400", "answered again (a bad hash)");
    })
    .await
    .expect("client");
}
