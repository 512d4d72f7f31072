//! Helpers shared by the end-to-end test files (each file uses some of them).
#![allow(dead_code)]

use std::{
    fs,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// Sends SIGKILL to `child` once the files directly in `dir` hold more than `bytes`: the
/// work is then well under way. Fails if the child ends first or makes no progress.
pub fn kill_when_dir_grows(child: &mut Child, dir: &Path, bytes: u64) {
    wait_for_dir_to_grow(child, dir, bytes);
    child.kill().expect("SIGKILL");
    let status = child.wait().expect("wait");
    assert!(!status.success(), "killed, not finished");
}

/// Sends `signal` (`INT`, `TERM`) to `child`, as Ctrl-C or a service manager would.
pub fn send_signal(child: &Child, signal: &str) {
    let sent = Command::new("kill")
        .args([format!("-{signal}"), child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(sent.success(), "kill -{signal}");
}

/// Returns once the files directly in `dir` hold more than `bytes`. Fails if `child`
/// ends first or no progress is made.
pub fn wait_for_dir_to_grow(child: &mut Child, dir: &Path, bytes: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let used: u64 = fs::read_dir(dir)
            .map(|rd| {
                rd.flatten()
                    .filter_map(|e| e.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0);
        if used > bytes {
            break;
        }
        assert!(
            child.try_wait().expect("wait").is_none(),
            "the process finished before it could be killed"
        );
        assert!(Instant::now() < deadline, "no progress within 60 s");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Runs the `commons` binary under test on `data_dir`.
pub fn commons(data_dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_commons"));
    cmd.env("COMMONS_DATA_DIR", data_dir);
    cmd
}

/// Runs `commons --json ARGS` on `data_dir`, which must succeed; returns its JSON output.
pub fn json_ok(data_dir: &Path, args: &[&str]) -> serde_json::Value {
    let out = commons(data_dir)
        .arg("--json")
        .args(args)
        .output()
        .expect("run commons");
    assert!(
        out.status.success(),
        "commons {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json output")
}

pub fn pattern(size: usize, seed: u8) -> Vec<u8> {
    let mut state = seed as u64 | 1;
    (0..size)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// A running `commons node run` on loopback, killed when dropped.
pub struct Node {
    /// The `commons node run` process.
    pub child: Child,
    /// The JSON line it printed when ready.
    pub ready: serde_json::Value,
}

impl Node {
    /// Starts a node on `data_dir` listening on a free loopback port.
    pub fn start(data_dir: &Path) -> Self {
        Self::start_with(data_dir, &[])
    }

    /// Starts a node with extra `node run` arguments; waits until it is ready.
    pub fn start_with(data_dir: &Path, extra: &[&str]) -> Self {
        Self::spawn(data_dir, extra, Stdio::null(), None)
    }

    /// As [`Node::start_with`], its logs (at `level`, as `COMMONS_LOG` says) in `log`.
    pub fn start_logging(data_dir: &Path, extra: &[&str], log: &Path, level: &str) -> Self {
        let file = fs::File::create(log).expect("log file");
        Self::spawn(data_dir, extra, file.into(), Some(level))
    }

    fn spawn(data_dir: &Path, extra: &[&str], stderr: Stdio, level: Option<&str>) -> Self {
        let mut command = commons(data_dir);
        if let Some(level) = level {
            command.env("COMMONS_LOG", level);
        }
        let mut child = command
            .args([
                "--json",
                "node",
                "run",
                "--listen",
                "/ip4/127.0.0.1/udp/0/quic-v1",
            ])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn node");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).expect("read");
        let ready = serde_json::from_str(&line).expect("json line");
        Self { child, ready }
    }

    /// Its first full address (ending in `/p2p/<peer id>`).
    pub fn addr(&self) -> String {
        self.ready["addrs"][0]
            .as_str()
            .expect("an address")
            .to_string()
    }

    /// Its PeerId.
    pub fn peer_id(&self) -> String {
        self.ready["peer_id"]
            .as_str()
            .expect("a peer id")
            .to_string()
    }

    /// Stops it with SIGTERM (a clean shutdown that saves its state) and waits.
    pub fn stop(mut self) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status();
        assert!(sent.is_ok_and(|s| s.success()), "SIGTERM sent");
        let _ = self.child.wait();
    }

    /// The ticket of the first dataset the node serves.
    pub fn ticket(&self) -> String {
        self.ready["tickets"][0]["ticket"]
            .as_str()
            .expect("a dataset ticket")
            .to_string()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn make_dataset(root: &Path, big: usize) -> u64 {
    fs::create_dir_all(root.join("shards")).expect("mkdir");
    fs::write(root.join("config.json"), br#"{"layers": 2}"#).expect("write");
    fs::write(root.join("shards/model-00001.safetensors"), pattern(big, 1)).expect("write");
    fs::write(
        root.join("shards/model-00002.safetensors"),
        pattern(big / 3 + 7, 2),
    )
    .expect("write");
    fs::write(root.join("empty.txt"), b"").expect("write");
    (13 + big + big / 3 + 7) as u64
}

pub fn add(data_dir: &Path, path: &Path) {
    json_ok(data_dir, &["add", path.to_str().expect("utf-8 path")]);
}

pub fn files(root: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).expect("read_dir") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let data = fs::read(&p).expect("read");
                out.push((p.strip_prefix(root).expect("inside").to_path_buf(), data));
            }
        }
    }
    out.sort();
    out
}

/// An HTTP/1.1 answer: status, headers (names lower-cased), body.
pub struct HttpReply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpReply {
    /// The first header named `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends one HTTP/1.1 request to `addr` (`host:port`) and reads the whole answer; the path
/// is sent as given (no normalisation, so `..` reaches the server).
pub fn http(addr: &str, method: &str, path: &str, headers: &[(&str, &str)]) -> HttpReply {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("connect to the gateway");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).expect("send");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read the answer");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a header block");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"))
    {
        body = dechunk(&body);
    }
    HttpReply {
        status,
        headers,
        body,
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("chunk size line");
        let size = usize::from_str_radix(
            std::str::from_utf8(&data[..line_end])
                .expect("ascii")
                .trim(),
            16,
        )
        .expect("hex chunk size");
        data = &data[line_end + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

/// The `host:port` of the gateway a node printed when ready.
pub fn gateway_addr(node: &Node) -> String {
    node.ready["gateway"]
        .as_str()
        .expect("the node runs a gateway")
        .trim_start_matches("http://")
        .to_string()
}

/// Polls `path` on the gateway until it answers 200 (a mirror still fetching answers
/// 404), at most `secs` seconds.
pub fn wait_for_http_ok(addr: &str, path: &str, secs: u64) -> HttpReply {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let reply = http(addr, "GET", path, &[]);
        if reply.status == 200 {
            return reply;
        }
        assert!(
            Instant::now() < deadline,
            "{path} still answers {} after {secs} s: {}",
            reply.status,
            reply.text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `node status` of the node on `dir`, once `check` accepts it or `secs` have passed.
pub fn status_until(
    dir: &Path,
    secs: u64,
    check: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        let status = json_ok(dir, &["node", "status"]);
        if check(&status) || std::time::Instant::now() > deadline {
            return status;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// Polls `check` until it holds or `timeout` passes; returns whether it held.
pub fn eventually(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
