//! Helpers shared by the end-to-end test files.

use std::{
    fs,
    path::Path,
    process::Child,
    time::{Duration, Instant},
};

/// Sends SIGKILL to `child` once the files directly in `dir` hold more than `bytes`: the
/// work is then well under way. Fails if the child ends first or makes no progress.
pub fn kill_when_dir_grows(child: &mut Child, dir: &Path, bytes: u64) {
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
    child.kill().expect("SIGKILL");
    let status = child.wait().expect("wait");
    assert!(!status.success(), "killed, not finished");
}
