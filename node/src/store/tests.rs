//! Store tests: round trips at every size edge, dedup, crash leftovers, corruption, GC.

use std::{fs, path::Path};

use commons_protocol::{tree::CHUNK_GROUP_BYTES, Hash};

use super::*;

/// Small spans so multi-row paths are exercised with little data.
const TEST_SPAN: u64 = 2 * CHUNK_GROUP_BYTES;

fn open(dir: &Path) -> Store {
    Store::open(
        dir.join("store"),
        StoreOptions {
            span_bytes: TEST_SPAN,
        },
    )
    .expect("open store")
}

fn pattern(size: usize, seed: u8) -> Vec<u8> {
    (0..size)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 11) as u8)
        .collect()
}

fn read_back(store: &Store, hash: &Hash) -> Vec<u8> {
    let mut out = Vec::new();
    store.read_blob_verified(hash, &mut out).expect("read back");
    out
}

/// A store that imports every non-empty blob through a table file of its own (`ingest`),
/// as it does from [`ingest::INGEST_FROM_BYTES`] on.
fn open_ingesting(dir: &Path) -> Store {
    let mut store = open(dir);
    store.ingest_from_bytes = 1;
    store
}

#[test]
fn files_round_trip_at_every_size_edge() {
    files_round_trip_at_every_size_edge_in(open);
}

#[test]
fn files_imported_through_table_files_round_trip_at_every_size_edge() {
    files_round_trip_at_every_size_edge_in(open_ingesting);
}

fn files_round_trip_at_every_size_edge_in(open: fn(&Path) -> Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let span = TEST_SPAN as usize;
    let sizes = [
        0,
        1,
        1023,
        1024,
        1025,
        16383,
        16384,
        16385,
        span - 1,
        span,
        span + 1,
        (1 << 20) + 1,
    ];
    for (i, size) in sizes.into_iter().enumerate() {
        let data = pattern(size, i as u8);
        let path = dir.path().join(format!("f{size}"));
        fs::write(&path, &data).expect("write");
        let added = store.add_file(&path, &NoProgress).expect("add");
        assert_eq!(added.hash, Hash::of(&data), "size {size}");
        assert_eq!(added.size, size as u64);
        assert!(!added.already_stored);
        assert_eq!(read_back(&store, &added.hash), data, "size {size}");
        assert!(store.verify_blob(&added.hash).expect("verify").is_empty());
        assert_eq!(
            store.pinned(&added.hash).expect("db").expect("pinned").kind,
            PinKind::Blob
        );
    }
}

#[test]
fn identical_content_is_stored_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let data = pattern(100_000, 7);
    fs::write(dir.path().join("a"), &data).expect("write");
    fs::write(dir.path().join("b"), &data).expect("write");
    let a = store
        .add_file(&dir.path().join("a"), &NoProgress)
        .expect("add");
    let b = store
        .add_file(&dir.path().join("b"), &NoProgress)
        .expect("add");
    assert_eq!(a.hash, b.hash);
    assert!(b.already_stored);
    assert_eq!(store.blobs().expect("list").len(), 1);
    // The dropped duplicate left no rows behind: one blob's worth of data rows only.
    let rows = store
        .db
        .iterator_cf(store.cf(CF_DATA), rocksdb::IteratorMode::Start)
        .count() as u64;
    assert_eq!(rows, 100_000u64.div_ceil(TEST_SPAN));
    assert_eq!(read_back(&store, &a.hash), data);
}

fn make_tree(root: &Path) {
    fs::create_dir_all(root.join("données/ñ/deep")).expect("mkdir");
    fs::write(root.join("README.md"), b"hello").expect("write");
    fs::write(root.join("données/ñ/日本.bin"), pattern(70_000, 1)).expect("write");
    fs::write(root.join("données/ñ/deep/empty"), b"").expect("write");
    fs::write(root.join("données/same-as-readme"), b"hello").expect("write");
}

#[test]
fn folders_give_the_same_root_and_list_every_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    make_tree(&dir.path().join("ds"));
    let first = store
        .add_folder(&dir.path().join("ds"), &NoProgress)
        .expect("add folder");
    let second = store
        .add_folder(&dir.path().join("ds"), &NoProgress)
        .expect("add again");
    assert_eq!(first.root, second.root);
    assert_eq!(second.new_blobs, 0);
    let paths: Vec<&str> = first
        .manifest
        .entries()
        .iter()
        .map(|e| e.path.as_str())
        .collect();
    assert_eq!(
        paths,
        [
            "README.md",
            "données/same-as-readme",
            "données/ñ/deep/empty",
            "données/ñ/日本.bin"
        ]
    );
    assert_eq!(
        store.read_manifest(&first.root).expect("manifest"),
        first.manifest
    );
    let meta = store.dataset(&first.root).expect("db").expect("dataset");
    assert_eq!(meta.files, 4);
    assert_eq!(meta.total_size, 70_010);
    // A copy of the folder elsewhere has the same root.
    let copy = dir.path().join("copy");
    make_tree(&copy);
    assert_eq!(
        store.add_folder(&copy, &NoProgress).expect("add copy").root,
        first.root
    );
}

#[cfg(unix)]
#[test]
fn symlinks_inside_are_followed_and_outside_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let ds = dir.path().join("ds");
    fs::create_dir_all(&ds).expect("mkdir");
    fs::write(ds.join("real"), b"data").expect("write");
    std::os::unix::fs::symlink("real", ds.join("link")).expect("symlink");
    let added = store.add_folder(&ds, &NoProgress).expect("add");
    let link = &added.manifest.entries()[0];
    assert_eq!(link.path, "link");
    assert_eq!(link.hash, Hash::of(b"data"));

    fs::write(dir.path().join("secret"), b"outside").expect("write");
    std::os::unix::fs::symlink("../secret", ds.join("escape")).expect("symlink");
    let err = store
        .add_folder(&ds, &NoProgress)
        .expect_err("outside link");
    assert!(err.to_string().contains("outside the folder"), "{err}");
}

#[cfg(unix)]
#[test]
fn non_utf8_names_are_refused_with_the_path() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let ds = dir.path().join("ds");
    fs::create_dir_all(&ds).expect("mkdir");
    fs::write(ds.join(std::ffi::OsStr::from_bytes(b"bad\xffname")), b"x").expect("write");
    let err = store.add_folder(&ds, &NoProgress).expect_err("non-utf8");
    assert!(err.to_string().contains("not valid UTF-8"), "{err}");
}

#[test]
fn an_interrupted_import_is_cleaned_up_at_the_next_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = open(dir.path());
        let data = pattern(200_000, 3);
        // Rows written, never committed: what a kill between the two steps leaves.
        let pending = store
            .write_rows(&data[..], data.len() as u64, Path::new("x"), &NoProgress)
            .expect("rows");
        assert!(store.blob(&pending.hash).expect("db").is_none());
        store.db.flush_cf(store.cf(CF_DATA)).expect("flush");
    }
    let store = open(dir.path());
    assert_no_import_rows(&store);
    // Ids are never reused, even after a crash.
    assert_eq!(store.next_id.load(std::sync::atomic::Ordering::SeqCst), 1);
}

fn blob_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = fs::read_dir(dir)
        .expect("store dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "blob"))
        .collect();
    files.sort();
    files
}

/// Bytes of `file` in the page cache: `mincore` of a mapping of it, which itself reads
/// nothing in.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn cached_bytes(file: &Path) -> u64 {
    use std::os::fd::AsRawFd;
    let f = fs::File::open(file).expect("open blob file");
    let len = f.metadata().expect("metadata").len() as usize;
    if len == 0 {
        return 0;
    }
    // SAFETY: a read-only shared mapping of an open file, unmapped below; `pages` has one
    // byte per page of it, as `mincore` writes.
    unsafe {
        let map = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        );
        assert_ne!(map, libc::MAP_FAILED, "mmap {}", file.display());
        let page = libc::sysconf(libc::_SC_PAGESIZE) as usize;
        let mut pages = vec![0u8; len.div_ceil(page)];
        let rc = libc::mincore(map, len, pages.as_mut_ptr());
        libc::munmap(map, len);
        assert_eq!(rc, 0, "mincore {}", file.display());
        pages.iter().filter(|&&p| p & 1 == 1).count() as u64 * page as u64
    }
}

/// Whether `dir` is on tmpfs.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn on_tmpfs(dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).expect("no NUL in a path");
    let mut stat = std::mem::MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: a NUL-terminated path and room for one `statfs`, read only if it succeeded.
    let rc = unsafe { libc::statfs(path.as_ptr(), stat.as_mut_ptr()) };
    assert_eq!(rc, 0, "statfs {}", dir.display());
    // SAFETY: filled in by the successful call above.
    let stat = unsafe { stat.assume_init() };
    // Both are `i64` on x86-64, narrower or unsigned elsewhere.
    #[allow(clippy::useless_conversion)]
    let (kind, tmpfs) = (i64::from(stat.f_type), i64::from(libc::TMPFS_MAGIC));
    kind == tmpfs
}

#[cfg(target_os = "linux")]
#[test]
fn blob_files_flushed_while_a_large_blob_arrives_leave_the_page_cache() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = pattern(TEST_SPAN as usize * 8, 3);
    let cached_and_written = |store_dir: &Path| {
        let files = blob_files(store_dir);
        assert!(!files.is_empty(), "the flush wrote a blob file");
        files.iter().fold((0, 0), |(cached, written), f| {
            let len = fs::metadata(f).expect("metadata").len();
            (cached + cached_bytes(f), written + len)
        })
    };
    let receive_first_spans = |name: &str, rate: partial::SpanRate| {
        let store = open(&dir.path().join(name));
        *store.span_rate.lock().expect("rate") = rate;
        let partial = store
            .begin_partial(&Hash::of(name.as_bytes()), UNLOGGED_SPANS_FROM)
            .expect("begin");
        put_spans(&store, &partial, &data, 0..8);
        store.persist_spans().expect("flush");
        let files = cached_and_written(&dir.path().join(name).join("store"));
        (store, partial, files)
    };
    // The first spans of a large blob arriving slowly (through the WAL): the blob file
    // their flush wrote stays cached (so the check below can fail).
    let (_, _, (cached, written)) = receive_first_spans("slow", partial::SpanRate::default());
    assert!(
        cached >= data.len() as u64,
        "{cached} of {written} bytes cached"
    );

    // The same, fast enough to skip the WAL: the blob file leaves the cache.
    let (large, partial, (cached, written)) =
        receive_first_spans("fast", partial::SpanRate::fast_for_an_hour());
    if on_tmpfs(dir.path()) {
        // tmpfs's pages are the files themselves: advice cannot drop them.
        eprintln!("skipped: the test's folder is on tmpfs");
        return;
    }
    assert!(written >= data.len() as u64, "{written} bytes written");
    assert_eq!(cached, 0, "{cached} of {written} bytes still cached");
    // Every span reads back from the disk as written.
    let span = TEST_SPAN as usize;
    for (index, expected) in data.chunks(span).enumerate() {
        let row = large
            .db
            .get_cf(large.cf(CF_DATA), span_key(partial.id, index as u64))
            .expect("read")
            .expect("span stored");
        assert_eq!(row, expected, "span {index}");
    }
    assert_eq!(
        large
            .missing_spans(partial.id, partial.size)
            .expect("marks"),
        vec![8..large.span_count(partial.size)]
    );
}

#[test]
fn blob_files_a_crash_left_half_written_are_removed_at_the_next_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store_dir = dir.path().join("store");
    let data = pattern(300_000, 9);
    let hash = {
        let store = open(dir.path());
        let path = dir.path().join("kept");
        fs::write(&path, &data).expect("write");
        store.add_file(&path, &NoProgress).expect("add").hash
    };
    let kept = blob_files(&store_dir);
    assert!(!kept.is_empty(), "the added file lives in a blob file");
    // What a flush killed mid-way leaves: the start of a blob file, no footer. One is a
    // truncated copy of a real file (a valid header), one has no room for a footer.
    let real = fs::read(&kept[0]).expect("read blob file");
    let torn = store_dir.join("999990.blob");
    fs::write(&torn, &real[..real.len() - 100]).expect("write");
    let tiny = store_dir.join("999991.blob");
    fs::write(&tiny, &real[..20]).expect("write");
    let store = open(dir.path());
    assert!(
        !torn.exists() && !tiny.exists(),
        "unfinished blob files removed"
    );
    assert_eq!(blob_files(&store_dir), kept, "closed blob files kept");
    assert_eq!(read_back(&store, &hash), data);
}

/// The data column family's files: (size, entries).
fn data_files(store: &Store) -> Vec<(usize, u64)> {
    store
        .db
        .live_files()
        .expect("live files")
        .into_iter()
        .filter(|f| f.column_family_name == CF_DATA)
        .map(|f| (f.size, f.num_entries))
        .collect()
}

/// Size of the largest table file in the store folder (live or not yet deleted).
fn largest_table_file(store_dir: &Path) -> u64 {
    fs::read_dir(store_dir)
        .expect("store dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "sst"))
        .map(|p| fs::metadata(p).expect("size").len())
        .max()
        .unwrap_or(0)
}

fn ingest_dir_entries(dir: &Path) -> usize {
    fs::read_dir(dir.join("store").join(ingest::INGEST_DIR))
        .map(|entries| entries.count())
        .unwrap_or(0)
}

#[test]
fn a_large_import_is_one_table_file_written_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_ingesting(dir.path());
    let data = pattern(5 * TEST_SPAN as usize + 1000, 4);
    let path = dir.path().join("big");
    fs::write(&path, &data).expect("write");
    let added = store.add_file(&path, &NoProgress).expect("add");
    // All six spans in one file holding them inline, none in the memtable or a blob file.
    assert_eq!(data_files(&store).len(), 1, "{:?}", data_files(&store));
    let (size, entries) = data_files(&store)[0];
    assert_eq!(entries, 6);
    assert!(
        size >= data.len(),
        "{size} bytes hold {} inline",
        data.len()
    );
    assert!(blob_files(&dir.path().join("store")).is_empty());
    let in_memtable = store
        .db
        .property_int_value_cf(store.cf(CF_DATA), "rocksdb.num-entries-active-mem-table")
        .expect("property");
    assert_eq!(in_memtable, Some(0));
    assert_eq!(ingest_dir_entries(dir.path()), 0, "the file was moved in");
    assert_eq!(read_back(&store, &added.hash), data);
    assert!(store.verify_blob(&added.hash).expect("verify").is_empty());
    // Reopened, the blob reads back from the ingested file.
    drop(store);
    let store = open(dir.path());
    assert_eq!(read_back(&store, &added.hash), data);
}

#[test]
fn table_files_a_crash_left_are_removed_and_their_rows_discarded_at_the_next_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = pattern(300_000, 5);
    {
        let store = open_ingesting(dir.path());
        // Ingested, never bound: what a kill between ingestion and the binding batch leaves.
        let pending = store
            .write_rows(&data[..], data.len() as u64, Path::new("x"), &NoProgress)
            .expect("rows");
        assert!(store.blob(&pending.hash).expect("db").is_none());
        assert!(store.disk_usage().expect("du") > data.len() as u64);
    }
    // What a kill while the file was written leaves: part of a table file, not ingested.
    let torn = dir
        .path()
        .join("store")
        .join(ingest::INGEST_DIR)
        .join("7.sst");
    fs::write(&torn, pattern(100_000, 6)).expect("write");
    let store = open(dir.path());
    assert!(!torn.exists(), "the unfinished table file is removed");
    assert_no_import_rows(&store);
    assert!(
        largest_table_file(&dir.path().join("store")) < 10_000,
        "the ingested file is deleted"
    );
}

#[test]
fn a_failed_import_through_a_table_file_leaves_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_ingesting(dir.path());
    let data = pattern(100_000, 9);
    let shrank = store.write_rows(&data[..80_000], 100_000, Path::new("f"), &NoProgress);
    assert!(
        matches!(shrank, Err(StoreError::FileChanged { .. })),
        "{shrank:?}"
    );
    assert_eq!(
        ingest_dir_entries(dir.path()),
        0,
        "its table file is deleted"
    );
    assert!(
        largest_table_file(&dir.path().join("store")) < 10_000,
        "nothing was ingested"
    );
    assert_no_import_rows(&store);
}

#[test]
fn ingested_blobs_are_stored_once_and_their_space_comes_back_when_removed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_ingesting(dir.path());
    let data = pattern(3 << 20, 7);
    let path = dir.path().join("big");
    fs::write(&path, &data).expect("write");
    let first = store.add_file(&path, &NoProgress).expect("add");
    let once = store.disk_usage().expect("du");
    let again = store.add_file(&path, &NoProgress).expect("add again");
    assert!(again.already_stored);
    let twice = store.disk_usage().expect("du");
    assert!(
        twice < once + (1 << 20),
        "the second copy is dropped: {once} bytes, then {twice}"
    );
    assert_eq!(read_back(&store, &first.hash), data);
    store.remove(&first.hash).expect("rm");
    let empty = store.disk_usage().expect("du");
    assert!(
        empty < once / 4,
        "space reclaimed: {once} bytes before, {empty} after"
    );
}

#[test]
fn removed_rows_in_an_ingested_file_go_with_the_file_and_only_there() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = open_ingesting(dir.path());
    let data = pattern(300_000, 8);
    let ingested = store
        .write_rows(&data[..], data.len() as u64, Path::new("x"), &NoProgress)
        .expect("rows");
    store.ingest_from_bytes = u64::MAX;
    let flushed = store
        .write_rows(&data[..], data.len() as u64, Path::new("y"), &NoProgress)
        .expect("rows");
    store.db.flush_cf(store.cf(CF_DATA)).expect("flush");
    let files_before = data_files(&store);
    assert_eq!(files_before.len(), 2, "{files_before:?}");
    let mut batch = WriteBatch::default();
    for pending in [&ingested, &flushed] {
        store.delete_rows(&mut batch, pending.id);
    }
    store.write(batch).expect("delete rows");
    let ranges = [blob_key_range(ingested.id), blob_key_range(flushed.id)];
    store
        .delete_ingested_files_in(&ranges)
        .expect("delete files");
    // The ingested file is gone without a compaction; the flushed file of blob references
    // is left for the compaction, which also accounts for its blob file.
    let flushed_file = *files_before.iter().min().expect("the smaller file");
    assert!(
        flushed_file.0 < 10_000,
        "blob references only: {flushed_file:?}"
    );
    assert_eq!(data_files(&store), vec![flushed_file]);
}

#[test]
fn a_table_file_ingested_after_a_deleted_blob_goes_below_the_deletion() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = open(dir.path());
    let data = pattern(300_000, 9);
    // An import discarded (as the open after a crash does): its rows' deletion is
    // compacted into the last level.
    let discarded = store
        .write_rows(&data[..], data.len() as u64, Path::new("x"), &NoProgress)
        .expect("rows");
    store.discard_imports(&[discarded.id]).expect("discard");
    // The next id's rows, through a table file of their own.
    store.ingest_from_bytes = 1;
    let next = store
        .write_rows(&data[..], data.len() as u64, Path::new("y"), &NoProgress)
        .expect("rows");
    assert_eq!(next.id.0, discarded.id.0 + 1);
    let files = store.db.live_files().expect("live files");
    let ingested = files
        .iter()
        .filter(|f| f.column_family_name == CF_DATA)
        .max_by_key(|f| f.size)
        .expect("the ingested file");
    // Had the deletion's range ended at the next blob's first key, RocksDB would count the
    // two files as overlapping, put the ingested one in level 0 above the deletion, and a
    // compaction would later rewrite every byte of it into blob files.
    assert_eq!(ingested.level, 6, "{files:?}");
}

#[test]
fn compactions_paused_at_open_resume_once_the_store_is_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let level0 = |store: &Store| {
        store
            .db
            .property_int_value_cf(store.cf(CF_DATA), "rocksdb.num-files-at-level0")
            .expect("property")
            .expect("level 0 files")
    };
    {
        let store = open(dir.path());
        store
            .db
            .set_options_cf(store.cf(CF_DATA), &[("disable_auto_compactions", "true")])
            .expect("pause");
        for seed in 0..6u8 {
            let path = dir.path().join(format!("f{seed}"));
            fs::write(&path, pattern(20_000, seed)).expect("write");
            store.add_file(&path, &NoProgress).expect("add");
        }
        assert!(level0(&store) >= 6, "one flush per import");
    }
    // RocksDB's trigger is 4 files in level 0: a compaction is due as the store opens.
    let store = open(dir.path());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while level0(&store) >= 4 {
        assert!(
            std::time::Instant::now() < deadline,
            "no compaction ran after open: {} files in level 0",
            level0(&store)
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Fails if any import left rows behind (data, outboard or an import record).
fn assert_no_import_rows(store: &Store) {
    for cf in [CF_DATA, CF_OUTBOARDS, CF_IMPORTS] {
        let left = store
            .db
            .iterator_cf(store.cf(cf), rocksdb::IteratorMode::Start)
            .count();
        assert_eq!(left, 0, "rows left in {cf}");
    }
}

/// Progress whose receiver goes away once `after` bytes were read.
struct CancelAfter {
    after: u64,
    read: std::sync::atomic::AtomicU64,
}

impl ImportProgress for CancelAfter {
    fn advance(&self, bytes: u64) {
        self.read
            .fetch_add(bytes, std::sync::atomic::Ordering::SeqCst);
    }
    fn cancelled(&self) -> bool {
        self.read.load(std::sync::atomic::Ordering::SeqCst) >= self.after
    }
}

#[test]
fn a_cancelled_import_stops_and_keeps_nothing_of_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let src = dir.path().join("src");
    fs::create_dir_all(&src).expect("mkdir");
    let first = pattern(TEST_SPAN as usize * 3, 1);
    fs::write(src.join("a.bin"), &first).expect("write");
    fs::write(src.join("b.bin"), pattern(TEST_SPAN as usize * 5, 2)).expect("write");
    // Cancelled inside one file.
    let cancel = CancelAfter {
        after: TEST_SPAN,
        read: 0.into(),
    };
    let one = store.add_file(&src.join("b.bin"), &cancel);
    assert!(matches!(one, Err(StoreError::Cancelled)), "{one:?}");
    assert_no_import_rows(&store);
    // Cancelled in a folder's second file: the first file's rows go too.
    let cancel = CancelAfter {
        after: first.len() as u64 + TEST_SPAN,
        read: 0.into(),
    };
    let folder = store.add_folder(&src, &cancel);
    assert!(matches!(folder, Err(StoreError::Cancelled)), "{folder:?}");
    assert_no_import_rows(&store);
    assert!(store.blobs().expect("db").is_empty());
    assert!(store.datasets().expect("db").is_empty());
    // Nothing stands in the way of the same import done whole.
    let added = store.add_folder(&src, &NoProgress).expect("add");
    let listed = store.read_manifest(&added.root).expect("manifest");
    assert_eq!(listed.entries().len(), 2);
}

#[test]
fn a_file_that_changes_size_while_read_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let data = pattern(50_000, 9);
    let shrank = store.write_rows(&data[..40_000], 50_000, Path::new("f"), &NoProgress);
    assert!(
        matches!(shrank, Err(StoreError::FileChanged { .. })),
        "{shrank:?}"
    );
    let grew = store.write_rows(&data[..], 40_000, Path::new("f"), &NoProgress);
    assert!(
        matches!(grew, Err(StoreError::FileChanged { .. })),
        "{grew:?}"
    );
    // Their rows are gone at once, not at the next open.
    assert_no_import_rows(&store);
}

/// Overwrites one stored data row, as disk corruption or tampering would.
fn corrupt_row(store: &Store, hash: &Hash, index: u64, at: usize) {
    let meta = store.blob(hash).expect("db").expect("blob");
    let key = span_key(meta.id, index);
    let mut row = store
        .db
        .get_cf(store.cf(CF_DATA), key)
        .expect("db")
        .expect("row");
    row[at] ^= 0x55;
    store.db.put_cf(store.cf(CF_DATA), key, row).expect("put");
}

#[test]
fn corruption_is_reported_with_offset_and_never_read_out() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let data = pattern(10 * CHUNK_GROUP_BYTES as usize + 5, 4);
    fs::write(dir.path().join("f"), &data).expect("write");
    let added = store
        .add_file(&dir.path().join("f"), &NoProgress)
        .expect("add");
    // Row 2 holds groups 4 and 5; damage group 5.
    corrupt_row(&store, &added.hash, 2, CHUNK_GROUP_BYTES as usize + 10);
    let bad_start = 5 * CHUNK_GROUP_BYTES;

    let report = store.verify_blob(&added.hash).expect("verify");
    assert_eq!(
        report,
        vec![BlobCorruption {
            hash: added.hash,
            range: bad_start..bad_start + CHUNK_GROUP_BYTES
        }]
    );
    let mut out = Vec::new();
    let err = store
        .read_blob_verified(&added.hash, &mut out)
        .expect_err("corrupt");
    assert!(
        matches!(err, StoreError::Corrupt { hash, offset } if hash == added.hash && offset == bad_start),
        "{err:?}"
    );
    assert_eq!(
        out,
        data[..bad_start as usize],
        "only verified bytes came out"
    );
}

#[test]
fn a_missing_row_is_corruption_too() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let data = pattern(4 * TEST_SPAN as usize, 5);
    fs::write(dir.path().join("f"), &data).expect("write");
    let added = store
        .add_file(&dir.path().join("f"), &NoProgress)
        .expect("add");
    let meta = store.blob(&added.hash).expect("db").expect("blob");
    store
        .db
        .delete_cf(store.cf(CF_DATA), span_key(meta.id, 1))
        .expect("delete");
    let err = store
        .read_blob_verified(&added.hash, &mut Vec::new())
        .expect_err("missing");
    assert!(
        matches!(err, StoreError::Corrupt { offset, .. } if offset == TEST_SPAN),
        "{err:?}"
    );
    let report = store.verify_blob(&added.hash).expect("verify");
    assert_eq!(report[0].range, TEST_SPAN..2 * TEST_SPAN);
}

#[test]
fn removing_a_blob_that_shares_its_blob_file_reclaims_its_space() {
    // One add writes both files into one blob file; removing one leaves it 2/3 garbage,
    // beyond BLOB_GARBAGE_REWRITE, so the file must be rewritten with the live third.
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let kept = pattern(3 << 20, 1);
    fs::create_dir_all(&a).expect("mkdir");
    fs::write(a.join("kept.bin"), &kept).expect("write");
    fs::write(a.join("removed.bin"), pattern(6 << 20, 2)).expect("write");
    let da = store.add_folder(&a, &NoProgress).expect("add a");
    fs::create_dir_all(&b).expect("mkdir");
    fs::write(b.join("kept.bin"), &kept).expect("write");
    store.add_folder(&b, &NoProgress).expect("add b");
    let full = store.disk_usage().expect("du");
    store.remove(&da.root).expect("rm a");
    let after = store.disk_usage().expect("du");
    assert!(
        after + (4 << 20) < full,
        "6 MiB removed, but the store went from {full} to {after} bytes"
    );
    assert_eq!(read_back(&store, &Hash::of(&kept)), kept);
    assert!(store
        .verify_blob(&Hash::of(&kept))
        .expect("verify")
        .is_empty());
}

#[test]
fn adding_content_already_stored_does_not_keep_its_second_copy() {
    // The second add writes kept.bin again (its hash is known only at the end) beside a new
    // file in one blob file; the copy is dropped, leaving that file 3/4 garbage.
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let kept = pattern(3 << 20, 1);
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    fs::create_dir_all(&a).expect("mkdir");
    fs::write(a.join("kept.bin"), &kept).expect("write");
    store.add_folder(&a, &NoProgress).expect("add a");
    let first = store.disk_usage().expect("du");
    fs::create_dir_all(&b).expect("mkdir");
    fs::write(b.join("kept.bin"), &kept).expect("write");
    fs::write(b.join("new.bin"), pattern(1 << 20, 2)).expect("write");
    let added = store.add_folder(&b, &NoProgress).expect("add b");
    assert_eq!(added.new_blobs, 1, "new.bin");
    let second = store.disk_usage().expect("du");
    assert!(
        second < first + (2 << 20),
        "1 MiB of new data, but the store grew from {first} to {second} bytes"
    );
    assert_eq!(read_back(&store, &Hash::of(&kept)), kept);
}

#[test]
fn remove_keeps_shared_blobs_and_reclaims_space() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let shared = pattern(3 << 20, 1);
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    for (ds, own) in [(&a, 2u8), (&b, 3u8)] {
        fs::create_dir_all(ds).expect("mkdir");
        fs::write(ds.join("shared.bin"), &shared).expect("write");
        fs::write(ds.join("own.bin"), pattern(6 << 20, own)).expect("write");
    }
    let da = store.add_folder(&a, &NoProgress).expect("add a");
    let db = store.add_folder(&b, &NoProgress).expect("add b");
    assert_eq!(store.blobs().expect("list").len(), 5); // shared, 2 own, 2 manifests
    let full = store.disk_usage().expect("du");

    let dry = store.gc(true).expect("dry run");
    assert!(dry.removed.is_empty(), "everything is pinned");

    let report = store.remove(&da.root).expect("rm a");
    assert!(report.was_dataset);
    assert_eq!(report.kept_shared, 1);
    let removed: Vec<Hash> = report.gc.removed.iter().map(|(h, _)| *h).collect();
    assert_eq!(removed.len(), 2, "a's own file and a's manifest");
    assert!(removed.contains(&da.root));
    assert!(store.dataset(&da.root).expect("db").is_none());
    let shared_hash = Hash::of(&shared);
    assert_eq!(read_back(&store, &shared_hash), shared);
    assert!(store.read_manifest(&db.root).is_ok());

    store.remove(&db.root).expect("rm b");
    assert!(store.blobs().expect("list").is_empty());
    let empty = store.disk_usage().expect("du");
    assert!(
        empty < full / 4,
        "space reclaimed: {full} bytes before, {empty} after"
    );
    assert!(matches!(
        store.remove(&db.root),
        Err(StoreError::NotFound { .. })
    ));
}

#[test]
fn hash_prefixes_resolve_like_git() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    fs::write(dir.path().join("f"), b"prefix").expect("write");
    let added = store
        .add_file(&dir.path().join("f"), &NoProgress)
        .expect("add");
    let hex = added.hash.to_string();
    assert_eq!(
        store.resolve_prefix(&hex[..7]).expect("db"),
        Some(added.hash)
    );
    assert_eq!(
        store.resolve_prefix(&hex[..8]).expect("db"),
        Some(added.hash)
    );
    assert_eq!(store.resolve_prefix("zz").expect("db"), None);
    let other = if hex.starts_with("0000") {
        "ffff"
    } else {
        "0000"
    };
    assert_eq!(store.resolve_prefix(other).expect("db"), None);
}

#[test]
fn reopening_keeps_everything_and_the_span_size() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = pattern(300_000, 6);
    fs::write(dir.path().join("f"), &data).expect("write");
    let hash = {
        let store = open(dir.path());
        store
            .add_file(&dir.path().join("f"), &NoProgress)
            .expect("add")
            .hash
    };
    let store = Store::open(dir.path().join("store"), StoreOptions::default()).expect("reopen");
    assert_eq!(store.span_bytes(), TEST_SPAN);
    assert_eq!(read_back(&store, &hash), data);
    let second = Store::open(dir.path().join("store"), StoreOptions::default());
    assert!(
        matches!(second, Err(StoreError::InUse { .. })),
        "{second:?}"
    );
}

/// Stores spans `indices` of `data` as a fetch would, each with its mark (the last span
/// of the blob clipped to its end).
fn put_spans(
    store: &Store,
    partial: &PartialBlob,
    data: &[u8],
    indices: impl IntoIterator<Item = u64>,
) {
    let span = store.span_bytes() as usize;
    for index in indices {
        let start = index as usize * span;
        let end = (start + span).min(data.len());
        store
            .put_verified_span(
                partial.id,
                partial.size,
                index,
                &data[start..end],
                None,
                &[],
            )
            .expect("span");
    }
}

/// Receives `data` as a peer fetch would: spans in a scrambled order, each with its mark.
fn receive_as_partial(store: &Store, hash: &Hash, data: &[u8]) -> BlobId {
    let partial = store.begin_partial(hash, data.len() as u64).expect("begin");
    let spans = store.span_count(data.len() as u64);
    put_spans(
        store,
        &partial,
        data,
        (0..spans)
            .rev()
            .step_by(2)
            .chain((0..spans).rev().skip(1).step_by(2)),
    );
    partial.id
}

#[test]
fn a_fetched_blob_completes_from_its_spans_kept_outboards() {
    let dir = tempfile::tempdir().expect("tempdir");
    let source = open(&dir.path().join("a"));
    let store = open(&dir.path().join("b"));
    for size in [
        TEST_SPAN as usize * 7 + 5000,
        TEST_SPAN as usize * 8,
        20_000,
    ] {
        let data = pattern(size, 3);
        fs::write(dir.path().join("f"), &data).expect("write");
        let hash = source
            .add_file(&dir.path().join("f"), &NoProgress)
            .expect("add")
            .hash;
        receive_as_partial(&store, &hash, &data);
        store.complete_partial(&hash).expect("complete");
        assert_eq!(read_back(&store, &hash), data, "size {size}");
        assert!(store.verify_blob(&hash).expect("verify").is_empty());
    }
}

#[test]
fn a_damaged_kept_outboard_falls_back_to_hashing_the_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let source = open(&dir.path().join("a"));
    let store = open(&dir.path().join("b"));
    let data = pattern(TEST_SPAN as usize * 5 + 123, 9);
    fs::write(dir.path().join("f"), &data).expect("write");
    let hash = source
        .add_file(&dir.path().join("f"), &NoProgress)
        .expect("add")
        .hash;
    let id = receive_as_partial(&store, &hash, &data);
    let key = layout::span_key(id, 1);
    let cf = store.cf(layout::CF_VERIFIED);
    let mut kept = store.db.get_cf(cf, key).expect("db").expect("mark");
    let last = kept.len() - 1;
    kept[last] ^= 1;
    store.db.put_cf(cf, key, kept).expect("damage");
    store
        .complete_partial(&hash)
        .expect("completes from the data");
    assert_eq!(read_back(&store, &hash), data);
    assert!(store.verify_blob(&hash).expect("verify").is_empty());
}

#[test]
fn missing_spans_in_a_range_sees_only_that_range() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let data = pattern(TEST_SPAN as usize * 10, 5);
    let hash = Hash::of(&data);
    let partial = store
        .begin_partial(&hash, data.len() as u64)
        .expect("begin");
    put_spans(&store, &partial, &data, [2u64, 3, 7]);
    assert_eq!(
        store.missing_spans_in(partial.id, 2..4).expect("db"),
        vec![]
    );
    assert_eq!(
        store.missing_spans_in(partial.id, 1..9).expect("db"),
        vec![1..2, 4..7, 8..9]
    );
    assert_eq!(
        store
            .missing_spans(partial.id, data.len() as u64)
            .expect("db"),
        vec![0..2, 4..7, 8..10]
    );
}

#[test]
fn held_bytes_counts_verified_spans_and_clips_the_short_last_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let span = TEST_SPAN as usize;
    // Three and a bit spans: the last one holds 100 bytes.
    let data = pattern(span * 3 + 100, 9);
    let hash = Hash::of(&data);
    assert_eq!(store.held_bytes(&hash).expect("absent"), 0);
    let partial = store
        .begin_partial(&hash, data.len() as u64)
        .expect("begin");
    assert_eq!(store.held_bytes(&hash).expect("nothing yet"), 0);
    put_spans(&store, &partial, &data, [1]);
    assert_eq!(store.held_bytes(&hash).expect("one span"), span as u64);
    put_spans(&store, &partial, &data, [3]);
    assert_eq!(
        store.held_bytes(&hash).expect("and the last"),
        span as u64 + 100
    );
    put_spans(&store, &partial, &data, [0u64, 2]);
    store.complete_partial(&hash).expect("complete");
    assert_eq!(
        store.held_bytes(&hash).expect("complete"),
        data.len() as u64
    );
}

/// Marks the store steps over while running `f` (marks are fresh, so in the memtable).
fn marks_stepped_over(f: impl FnOnce()) -> u64 {
    use rocksdb::perf::{set_perf_stats, PerfContext, PerfMetric, PerfStatsLevel};
    set_perf_stats(PerfStatsLevel::EnableCount);
    let mut context = PerfContext::default();
    context.reset();
    f();
    let stepped = context.metric(PerfMetric::NextOnMemtableCount);
    set_perf_stats(PerfStatsLevel::Disable);
    stepped
}

#[test]
fn resuming_a_request_reads_only_the_marks_it_needs() {
    // Every request of a fetch calls `begin_partial`, and every batch asks which of its
    // spans are missing: neither may walk all the blob's marks, or a large fetch slows
    // down quadratically (a 1 GiB fetch spent 15 % of its CPU doing that).
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let span = TEST_SPAN as usize;
    let spans = 200u64;
    let data = pattern(span * spans as usize, 4);
    let hash = Hash::of(&data);
    let partial = store
        .begin_partial(&hash, data.len() as u64)
        .expect("begin");
    put_spans(&store, &partial, &data, 0..spans - 1);
    let resume = marks_stepped_over(|| {
        store
            .begin_partial(&hash, data.len() as u64)
            .expect("resume");
    });
    assert!(resume <= 2, "begin_partial stepped over {resume} marks");
    let batch = marks_stepped_over(|| {
        assert_eq!(
            store.missing_spans_in(partial.id, 100..104).expect("db"),
            vec![]
        );
    });
    assert!(batch <= 6, "a 4-span batch stepped over {batch} marks");
    // The whole-blob question still sees every mark.
    let whole = marks_stepped_over(|| {
        assert_eq!(
            store
                .missing_spans(partial.id, data.len() as u64)
                .expect("db"),
            vec![spans - 1..spans]
        );
    });
    assert!(whole >= spans - 2, "the count sees iteration ({whole})");
}

#[test]
fn another_size_claim_restarts_a_blob_only_while_its_last_span_is_missing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let span = TEST_SPAN as usize;
    let data = pattern(span * 4, 9);
    let hash = Hash::of(&data);
    let size = data.len() as u64;
    let first = store.begin_partial(&hash, size).expect("begin");
    store
        .put_verified_span(first.id, first.size, 0, &data[..span], None, &[])
        .expect("span");
    // A neighbouring blob's marks must not count as this blob's.
    let other = Hash::of(b"other");
    let neighbour = store.begin_partial(&other, size).expect("begin");
    store
        .put_verified_span(neighbour.id, neighbour.size, 0, &data[..span], None, &[])
        .expect("span");
    assert_eq!(
        store.missing_spans_in(first.id, 0..4).expect("db"),
        vec![1..4]
    );

    // Same claim: resumed as it is.
    let again = store.begin_partial(&hash, size).expect("resume");
    assert_eq!((again.id, again.complete), (first.id, false));
    // The last span is missing, so our size is unproven: another claim starts over.
    let restarted = store.begin_partial(&hash, size + 1).expect("restart");
    assert_ne!(restarted.id, first.id);
    assert_eq!(restarted.size, size + 1);

    // Once the last span (holding the last group) is stored, the size is proven.
    let proven = store.begin_partial(&hash, size).expect("restart back");
    store
        .put_verified_span(proven.id, proven.size, 3, &data[3 * span..], None, &[])
        .expect("last span");
    assert!(matches!(
        store.begin_partial(&hash, size + 1),
        Err(StoreError::SizeConflict { known, claimed, .. }) if known == size && claimed == size + 1
    ));
}

#[test]
fn quota_pressure_removes_only_unpinned_data_least_recently_used_first() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let file = |name: &str, size: usize, seed: u8| {
        let path = dir.path().join(name);
        fs::write(&path, pattern(size, seed)).expect("write");
        store.add_file(&path, &NoProgress).expect("add").hash
    };
    let pinned = file("pinned.bin", 400_000, 1);
    let old = file("old.bin", 300_000, 2);
    let recent = file("recent.bin", 200_000, 3);
    store.unpin(&old).expect("unpin");
    store.unpin(&recent).expect("unpin");
    // `old` was last used long ago; `recent` just now.
    store
        .db
        .put_cf(store.cf(CF_USED), old.as_bytes(), 1_000u64.to_be_bytes())
        .expect("backdate");
    assert_eq!(store.stored_bytes().expect("bytes"), 900_000);

    // Under the quota: nothing goes.
    let report = store.gc_to_quota(1_000_000, false).expect("gc");
    assert!(report.removed.is_empty());
    // 750,000 bytes allowed: removing the least recently used unpinned blob is enough.
    let dry = store.gc_to_quota(750_000, true).expect("dry run");
    assert_eq!(dry.removed, vec![(old, 300_000)]);
    assert!(
        store.blob(&old).expect("db").is_some(),
        "a dry run removes nothing"
    );
    let report = store.gc_to_quota(750_000, false).expect("gc");
    assert_eq!(report.removed, vec![(old, 300_000)]);
    assert_eq!((report.stored_bytes, report.over_quota), (600_000, 0));
    assert!(store.blob(&recent).expect("db").is_some());
    // A quota below the pinned data: every unpinned blob goes, the pinned one never.
    let report = store.gc_to_quota(100_000, false).expect("gc");
    assert_eq!(report.removed, vec![(recent, 200_000)]);
    assert_eq!(report.over_quota, 300_000);
    assert_eq!(read_back(&store, &pinned).len(), 400_000);
}

#[test]
fn a_blob_held_by_a_fetch_in_progress_survives_collection() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let hash = Hash::of(b"not yet fetched");
    let partial = store.begin_partial(&hash, 5 * TEST_SPAN).expect("begin");
    let held = store.hold([hash]);
    let report = store.gc(false).expect("gc");
    assert!(report.removed.is_empty(), "held: {report:?}");
    assert_eq!(
        store.blob(&hash).expect("db").map(|m| m.id),
        Some(partial.id)
    );
    drop(held);
    let report = store.gc(false).expect("gc");
    assert_eq!(
        report.removed,
        vec![(hash, 5 * TEST_SPAN)],
        "unheld and unpinned: it goes"
    );
}

#[cfg(unix)]
#[test]
fn a_hugging_face_snapshot_is_added_through_its_blob_links_and_nothing_else() {
    use std::os::unix::fs::symlink;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    // The Hub cache layout: models--org--name/{blobs/<etag>, snapshots/<commit>/<file> → ../../blobs/<etag>}.
    let repo = dir.path().join("models--org--name");
    let snap = repo.join("snapshots/0123abcd");
    fs::create_dir_all(repo.join("blobs")).expect("mkdir");
    fs::create_dir_all(snap.join("onnx")).expect("mkdir");
    let weights = pattern(100_000, 4);
    fs::write(repo.join("blobs/e1"), br#"{"a": 1}"#).expect("write");
    fs::write(repo.join("blobs/e2"), &weights).expect("write");
    symlink("../../blobs/e1", snap.join("config.json")).expect("link");
    symlink("../../../blobs/e2", snap.join("onnx/model.onnx")).expect("link");
    let ds = store
        .add_folder(&snap, &NoProgress)
        .expect("a snapshot adds");
    let paths: Vec<&str> = ds
        .manifest
        .entries()
        .iter()
        .map(|e| e.path.as_str())
        .collect();
    assert_eq!(paths, ["config.json", "onnx/model.onnx"]);
    assert_eq!(read_back(&store, &Hash::of(&weights)), weights);

    // A link out of the repository's blobs is still refused, naming the file.
    fs::write(repo.join("secret.txt"), b"not part of the model").expect("write");
    symlink("../../secret.txt", snap.join("leak.txt")).expect("link");
    let err = store
        .add_folder(&snap, &NoProgress)
        .expect_err("outside blobs");
    let text = err.to_string();
    assert!(
        text.contains("leak.txt") && text.contains("outside"),
        "{text}"
    );
    // And an ordinary folder gets no such exception.
    let plain = dir.path().join("plain");
    fs::create_dir_all(&plain).expect("mkdir");
    symlink(repo.join("blobs/e1"), plain.join("config.json")).expect("link");
    assert!(store.add_folder(&plain, &NoProgress).is_err());
}

/// Rows of blob `id` in the `above` column family.
fn above_rows(store: &Store, id: BlobId) -> usize {
    let (start, end) = layout::blob_key_range(id);
    store
        .db
        .iterator_cf(
            store.cf(layout::CF_ABOVE),
            rocksdb::IteratorMode::From(&start, rocksdb::Direction::Forward),
        )
        .map_while(|item| item.ok())
        .take_while(|(key, _)| key.as_ref() < &end[..])
        .count()
}

#[test]
fn a_partial_blob_says_which_groups_it_holds_and_its_above_pairs_go_with_it() {
    use commons_protocol::wire::HaveResponse;
    let dir = tempfile::tempdir().expect("tempdir");
    let source = open(&dir.path().join("a"));
    let store = open(&dir.path().join("b"));
    let data = pattern(TEST_SPAN as usize * 6 + 100, 8);
    fs::write(dir.path().join("f"), &data).expect("write");
    let hash = source
        .add_file(&dir.path().join("f"), &NoProgress)
        .expect("add")
        .hash;
    assert_eq!(
        store.held_groups(&hash).expect("db"),
        HaveResponse::NotFound
    );

    // Spans 1, 2 and 6 (the short last one) arrive, each with a pair from above it.
    let partial = store
        .begin_partial(&hash, data.len() as u64)
        .expect("begin");
    let span = TEST_SPAN as usize;
    for index in [1u64, 2, 6] {
        let start = index as usize * span;
        let end = (start + span).min(data.len());
        let above = [(index * 2..index * 2 + 4, [index as u8; 64])];
        store
            .put_verified_span(
                partial.id,
                partial.size,
                index,
                &data[start..end],
                None,
                &above,
            )
            .expect("span");
    }
    // Two 16 KiB groups per span; the last span holds one short group (group 12).
    assert_eq!(
        store.held_groups(&hash).expect("db"),
        HaveResponse::Held {
            size: data.len() as u64,
            complete: false,
            groups: vec![2..6, 12..13],
        }
    );
    assert_eq!(above_rows(&store, partial.id), 3);

    // Completing the blob drops the pairs above spans: its full outboard replaces them.
    put_spans(&store, &partial, &data, [0u64, 3, 4, 5]);
    store.complete_partial(&hash).expect("complete");
    assert_eq!(above_rows(&store, partial.id), 0);
    assert!(matches!(
        store.held_groups(&hash).expect("db"),
        HaveResponse::Held { complete: true, .. }
    ));

    // A partial blob nothing pins or holds is collected with its pairs.
    let other = Hash::of(b"another blob");
    let partial = store.begin_partial(&other, 4 * TEST_SPAN).expect("begin");
    store
        .put_verified_span(
            partial.id,
            partial.size,
            0,
            &data[..span],
            None,
            &[(0..4, [7; 64])],
        )
        .expect("span");
    assert_eq!(above_rows(&store, partial.id), 1);
    store.gc(false).expect("gc");
    assert_eq!(above_rows(&store, partial.id), 0);
}

/// The Hub ids content must have, as an origin's listing would give them.
fn listed_for(data: &[u8], lfs: bool) -> commons_protocol::hub::ListedIds {
    let mut hasher = commons_protocol::hub::HubHasher::new(data.len() as u64);
    hasher.update(data);
    let ids = hasher.finish(lfs).expect("sizes add up");
    commons_protocol::hub::ListedIds {
        git_oid: ids.git_oid,
        lfs_sha256: lfs.then_some(ids.sha256),
    }
}

#[test]
fn a_file_from_an_origin_is_kept_only_if_its_hub_id_matches() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let good = pattern(100_000, 1);
    for lfs in [false, true] {
        let listed = listed_for(&good, lfs);
        let mut bad = good.clone();
        bad[50_000] ^= 1;
        let err = store
            .add_hub_file(
                &bad[..],
                bad.len() as u64,
                "w.bin",
                &listed,
                false,
                &NoProgress,
            )
            .expect_err("a flipped byte is refused");
        assert!(matches!(err, StoreError::HubIdMismatch { .. }), "{err}");
        assert!(err.to_string().contains("w.bin"));
        assert!(
            store.blob(&Hash::of(&bad)).expect("read").is_none(),
            "nothing kept"
        );
        assert!(store
            .hub_file(&listed.etag(), 100_000)
            .expect("read")
            .is_none());

        let (blob, ids, _hold) = store
            .add_hub_file(
                &good[..],
                good.len() as u64,
                "w.bin",
                &listed,
                false,
                &NoProgress,
            )
            .expect("the right bytes are kept");
        assert_eq!(blob.hash, Hash::of(&good));
        assert_eq!((ids.lfs, ids.git_oid), (lfs, listed.git_oid));
        assert_eq!(
            store.hub_file(&listed.etag(), 100_000).expect("read"),
            Some((blob.hash, ids))
        );
        assert_eq!(
            store.hub_file_held(&listed.etag()).expect("read"),
            Some((blob.hash, 100_000))
        );
        // Another size under the same id is not this file.
        assert!(store
            .hub_file(&listed.etag(), 99_999)
            .expect("read")
            .is_none());
    }
}

#[test]
fn a_stored_blob_is_checked_against_hub_ids_before_it_is_named_by_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let data = pattern(70_000, 3);
    let path = dir.path().join("f");
    fs::write(&path, &data).expect("write");
    let hash = store.add_file(&path, &NoProgress).expect("add").hash;
    // A peer said this blob is another file: it is not, and nothing names it so.
    let other = listed_for(&pattern(70_000, 4), true);
    assert_eq!(store.check_hub_file(&hash, &other).expect("check"), None);
    assert!(store.hub_file_held(&other.etag()).expect("read").is_none());
    // What it is, it is.
    let own = listed_for(&data, true);
    let ids = store
        .check_hub_file(&hash, &own)
        .expect("check")
        .expect("matches");
    assert_eq!(ids.etag(), own.etag());
    assert_eq!(
        store.hub_file_held(&own.etag()).expect("read"),
        Some((hash, 70_000))
    );
}

#[test]
fn files_of_a_private_repository_are_never_named_to_peers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let data = pattern(30_000, 5);
    let listed = listed_for(&data, false);
    let (blob, _, _hold) = store
        .add_hub_file(
            &data[..],
            data.len() as u64,
            "secret.txt",
            &listed,
            true,
            &NoProgress,
        )
        .expect("kept");
    assert!(
        store
            .hub_file(&listed.etag(), 30_000)
            .expect("read")
            .is_some(),
        "usable here"
    );
    assert_eq!(
        store.hub_file_held(&listed.etag()).expect("read"),
        None,
        "not named to peers"
    );
    // The same content from a public repository makes it public.
    store
        .add_hub_file(
            &data[..],
            data.len() as u64,
            "public.txt",
            &listed,
            false,
            &NoProgress,
        )
        .expect("kept");
    assert_eq!(
        store.hub_file_held(&listed.etag()).expect("read"),
        Some((blob.hash, 30_000))
    );
}

/// Stores spans `indices` of `data` (blob `hash`) as a fetch does, each with the pairs
/// above it that a peer's response proved.
fn receive_spans_with_proofs(store: &Store, hash: &Hash, data: &[u8], indices: &[u64]) -> BlobId {
    use commons_protocol::{partial as tree_partial, subtree};
    let group = CHUNK_GROUP_BYTES;
    let per_span = TEST_SPAN / group;
    let groups = tree_partial::group_count(data.len() as u64);
    let partial = store.begin_partial(hash, data.len() as u64).expect("begin");
    let span = TEST_SPAN as usize;
    for &index in indices {
        let start = index as usize * span;
        let end = (start + span).min(data.len());
        let above: Vec<_> =
            tree_partial::nodes_above(index * per_span..(index + 1) * per_span, groups, per_span)
                .into_iter()
                .map(|node| {
                    let from = (node.start * group) as usize;
                    let to = ((node.end * group) as usize).min(data.len());
                    let half = (node.end - node.start) / 2 * group;
                    let pair = subtree::node_pair(from as u64, &data[from..to], half);
                    (node, pair)
                })
                .collect();
        store
            .put_verified_span(
                partial.id,
                partial.size,
                index,
                &data[start..end],
                None,
                &above,
            )
            .expect("span");
    }
    partial.id
}

#[test]
fn verify_checks_what_a_partial_blob_holds_and_names_the_bad_span() {
    let dir = tempfile::tempdir().expect("tempdir");
    let source = open(&dir.path().join("a"));
    let store = open(&dir.path().join("b"));
    let data = pattern(TEST_SPAN as usize * 6 + 100, 12);
    fs::write(dir.path().join("f"), &data).expect("write");
    let hash = source
        .add_file(&dir.path().join("f"), &NoProgress)
        .expect("add")
        .hash;
    receive_spans_with_proofs(&store, &hash, &data, &[1, 2, 6]);
    assert_eq!(store.verify_blob(&hash).expect("verify"), Vec::new());
    assert_eq!(
        store.check_rows().expect("check").problems,
        Vec::<String>::new()
    );

    corrupt_row(&store, &hash, 2, 7);
    assert_eq!(
        store.verify_blob(&hash).expect("verify"),
        vec![BlobCorruption {
            hash,
            range: 2 * TEST_SPAN..3 * TEST_SPAN
        }]
    );
}

#[test]
fn the_row_check_finds_rows_that_disagree() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let data = pattern(TEST_SPAN as usize * 3 + 10, 4);
    let path = dir.path().join("f");
    fs::write(&path, &data).expect("write");
    let complete = store.add_file(&path, &NoProgress).expect("add").hash;
    let partial_data = pattern(TEST_SPAN as usize * 4, 5);
    let partial = Hash::of(&partial_data);
    let id = receive_spans_with_proofs(&store, &partial, &partial_data, &[0, 3]);
    let clean = store.check_rows().expect("check");
    assert_eq!(clean.problems, Vec::<String>::new());
    assert_eq!(clean.blobs, 2);

    // A complete blob missing a data row, a mark without its data, rows of no blob.
    let meta = store.blob(&complete).expect("db").expect("blob");
    store
        .db
        .delete_cf(store.cf(CF_DATA), span_key(meta.id, 1))
        .expect("delete");
    store
        .db
        .delete_cf(store.cf(CF_DATA), span_key(id, 3))
        .expect("delete");
    store
        .db
        .put_cf(store.cf(CF_DATA), span_key(BlobId(999), 0), b"stray")
        .expect("put");
    let found = store.check_rows().expect("check");
    assert_eq!(found.problem_count, 3, "{:?}", found.problems);
    let text = found.problems.join("\n");
    assert!(
        text.contains(&format!("complete blob {complete}: 3 of its 4 data rows")),
        "{text}"
    );
    assert!(
        text.contains(&format!("partial blob {partial}: 1 verified marks")),
        "{text}"
    );
    assert!(text.contains("row id 999 belong to no blob"), "{text}");
}

/// Table files of each column family, by name.
fn table_files_by_family(store: &Store) -> std::collections::BTreeMap<String, usize> {
    let mut count = std::collections::BTreeMap::new();
    for file in store.db.live_files().expect("live files") {
        *count.entry(file.column_family_name).or_insert(0) += 1;
    }
    count
}

/// Every row checks out, and no family has more than a run's worth of table files more
/// than in `before` (one run of small files may wait for its next merge).
fn assert_rows_intact_and_few_more_table_files(
    store: &Store,
    before: &std::collections::BTreeMap<String, usize>,
) {
    assert_eq!(
        store.check_rows().expect("row check").problems,
        Vec::<String>::new()
    );
    let after = table_files_by_family(store);
    for (family, files) in &after {
        let had = before.get(family).copied().unwrap_or(0);
        assert!(
            *files <= had + gc::SMALL_TABLE_FILES_MERGED_FROM + 1,
            "{family}: {had} table files before, {files} after ({after:?})"
        );
    }
}

#[test]
fn a_series_of_short_commands_does_not_pile_up_table_files() {
    // Each CLI command opens the store, does one thing and closes it. Forty rounds of
    // `add` then `rm`, each in a store opened for it, must leave the table files of a few
    // rounds, not of every round: without `merge_small_table_files` each removal's range
    // deletions and every flush of the small families stayed a file of its own (80 in
    // `verified` and in `above`, 41 in `imports`).
    let dir = tempfile::tempdir().expect("tempdir");
    let ds = dir.path().join("ds");
    fs::create_dir_all(&ds).expect("mkdir");
    fs::write(ds.join("kept.bin"), pattern(1 << 20, 1)).expect("write");
    open(dir.path())
        .add_folder(&ds, &NoProgress)
        .expect("add kept");
    let before = table_files_by_family(&open(dir.path()));
    for round in 0..40u8 {
        fs::write(ds.join("round.bin"), pattern(100_000, round)).expect("write");
        let added = open(dir.path()).add_folder(&ds, &NoProgress).expect("add");
        open(dir.path()).remove(&added.root).expect("rm");
    }
    let store = open(dir.path());
    let kept = pattern(1 << 20, 1);
    assert_eq!(read_back(&store, &Hash::of(&kept)), kept);
    assert_rows_intact_and_few_more_table_files(&store, &before);
}

#[test]
fn a_store_kept_open_merges_the_small_table_files_its_imports_make() {
    // A daemon opens its store once. Each import flushes `data` and `outboards` (a small
    // file in each); imports and completed fetches merge them now and then, here every
    // time (without it: 40 files in each). Everything stays readable.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = open(dir.path());
    store.small_files_merged_every = 1;
    let before = table_files_by_family(&store);
    let ds = dir.path().join("ds");
    fs::create_dir_all(&ds).expect("mkdir");
    let mut fetched = Vec::new();
    for round in 0..40u8 {
        fs::write(ds.join("round.bin"), pattern(100_000, round)).expect("write");
        store.add_folder(&ds, &NoProgress).expect("add");
        // And a fetch completed, in the same store.
        let data = pattern(3 * TEST_SPAN as usize + 5, round.wrapping_add(100));
        let hash = Hash::of(&data);
        receive_as_partial(&store, &hash, &data);
        store.complete_partial(&hash).expect("complete");
        fetched.push((hash, data));
    }
    for round in 0..40u8 {
        let data = pattern(100_000, round);
        assert_eq!(read_back(&store, &Hash::of(&data)), data, "round {round}");
    }
    for (hash, data) in &fetched {
        assert_eq!(read_back(&store, hash), *data);
    }
    assert_rows_intact_and_few_more_table_files(&store, &before);
}
