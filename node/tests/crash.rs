//! A process killed (SIGKILL) while it stores the spans of a large blob, which skip the
//! WAL: after reopening, every span with a verified mark has its data, and the blob
//! completes from what survived plus the rest. Killed just after such a blob completed:
//! the whole blob is there.
//!
//! The test runs its own binary again as the process to kill (`CRASH_CHILD_STORE` set).

mod common;

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Command, Stdio},
};

use commons_node::store::{Store, StoreOptions, UNLOGGED_SPANS_FROM};
use commons_protocol::Hash;

/// Larger than the unlogged threshold (so its spans skip the WAL) and than one 16 MiB
/// memtable (so a background flush may be under way when the kill comes).
const SIZE: usize = (UNLOGGED_SPANS_FROM + (8 << 20)) as usize;
const SEED: u64 = 0x5eed;
const CHILD_ENV: &str = "CRASH_CHILD_STORE";
/// Spans the child puts on disk (`persist_spans`) before storing more.
const PERSISTED: usize = 40;
/// Spans at the end the child never stores.
const NEVER_WRITTEN: usize = 6;
const KILL_ME: &str = "stored: kill me";
/// Set for a child that stores every span and completes the blob before the kill.
const CHILD_COMPLETES: &str = "CRASH_CHILD_COMPLETES";

/// Runs the child on `store_dir` (completing the blob or not) and kills it once it says so.
fn run_and_kill(test: &str, store_dir: &Path, completes: bool) {
    let mut command = Command::new(std::env::current_exe().expect("test binary"));
    command
        .args(["--exact", test, "--nocapture"])
        .env(CHILD_ENV, store_dir)
        .stdout(Stdio::piped());
    if completes {
        command.env(CHILD_COMPLETES, "1");
    }
    let mut process = command.spawn().expect("spawn child");
    let lines = BufReader::new(process.stdout.take().expect("stdout")).lines();
    let ready = lines
        .map(|line| line.expect("read"))
        .any(|line| line.trim() == KILL_ME);
    assert!(ready, "the child stopped before storing its spans");
    process.kill().expect("SIGKILL");
    process.wait().expect("wait");
}

/// The child: stores the first `PERSISTED` spans and puts them on disk, then stores all
/// but the last `NEVER_WRITTEN` (a background flush of those may or may not be done when
/// the kill comes), says so, and waits to be killed.
fn child(store_dir: &Path) {
    let data = common::pattern(SIZE, SEED);
    let hash = Hash::of(&data);
    let store = Store::open(store_dir, StoreOptions::default()).expect("open");
    let partial = store.begin_partial(&hash, SIZE as u64).expect("begin");
    let span = store.span_bytes() as usize;
    let pieces: Vec<&[u8]> = data.chunks(span).collect();
    for (index, piece) in pieces.iter().enumerate().take(pieces.len() - NEVER_WRITTEN) {
        if index == PERSISTED {
            store.persist_spans().expect("flush");
        }
        store
            .put_verified_span(partial.id, partial.size, index as u64, piece, None, &[])
            .expect("span");
    }
    if std::env::var_os(CHILD_COMPLETES).is_some() {
        for (index, piece) in pieces.iter().enumerate().skip(pieces.len() - NEVER_WRITTEN) {
            store
                .put_verified_span(partial.id, partial.size, index as u64, piece, None, &[])
                .expect("span");
        }
        store.complete_partial(&hash).expect("complete");
    }
    println!("{KILL_ME}");
    loop {
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}

#[test]
fn a_kill_while_storing_unlogged_spans_leaves_every_mark_backed_by_its_data() {
    if let Some(dir) = std::env::var_os(CHILD_ENV) {
        return child(Path::new(&dir));
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let store_dir = tmp.path().join("store");
    run_and_kill(
        "a_kill_while_storing_unlogged_spans_leaves_every_mark_backed_by_its_data",
        &store_dir,
        false,
    );
    let data = common::pattern(SIZE, SEED);
    let hash = Hash::of(&data);
    let spans = SIZE.div_ceil(256 << 10) as u64;

    let store = Store::open(&store_dir, StoreOptions::default()).expect("reopen");
    let meta = store.blob(&hash).expect("db").expect("the partial blob");
    let missing = store.missing_spans(meta.id, meta.size).expect("marks");
    let lost: u64 = missing.iter().map(|r| r.end - r.start).sum();
    eprintln!("{lost} of {spans} spans lost to the kill");
    assert!(
        lost >= NEVER_WRITTEN as u64,
        "the last spans were never written"
    );
    assert!(
        !missing.iter().any(|r| r.start < PERSISTED as u64),
        "spans put on disk survive the kill: missing {missing:?}"
    );
    let span = store.span_bytes() as usize;
    for index in 0..spans {
        if missing.iter().any(|r| r.contains(&index)) {
            continue;
        }
        let start = index as usize * span;
        let end = (start + span).min(SIZE);
        let stored = store.read_span(meta.id, index).expect("db");
        assert!(
            stored.as_deref() == Some(&data[start..end]),
            "span {index} is marked verified but its data is missing or wrong"
        );
    }
    // Fetch the rest: the blob completes and verifies.
    for range in missing {
        for index in range {
            let start = index as usize * span;
            let end = (start + span).min(SIZE);
            store
                .put_verified_span(meta.id, meta.size, index, &data[start..end], None, &[])
                .expect("span");
        }
    }
    store.complete_partial(&hash).expect("complete");
    let mut out = Vec::new();
    store.read_blob_verified(&hash, &mut out).expect("verified");
    assert!(out == data);
}

#[test]
fn a_kill_after_an_unlogged_blob_completes_keeps_the_whole_blob() {
    if let Some(dir) = std::env::var_os(CHILD_ENV) {
        return child(Path::new(&dir));
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let store_dir = tmp.path().join("store");
    run_and_kill(
        "a_kill_after_an_unlogged_blob_completes_keeps_the_whole_blob",
        &store_dir,
        true,
    );
    // Completion is logged in the WAL: the spans it stands on were put on disk first.
    let data = common::pattern(SIZE, SEED);
    let hash = Hash::of(&data);
    let store = Store::open(&store_dir, StoreOptions::default()).expect("reopen");
    let mut out = Vec::new();
    store
        .read_blob_verified(&hash, &mut out)
        .expect("complete and verified after the kill");
    assert!(out == data);
}
