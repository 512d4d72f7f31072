"""Downloads a small "model" through a Commons gateway with the official huggingface_hub
client, as a user would (HF_ENDPOINT), and checks every file is byte-identical.

Usage: HF_ENDPOINT=http://<gateway> python hf_check.py <repo_id> <source folder> <cache dir>
"""

import filecmp
import os
import sys
from pathlib import Path

from huggingface_hub import hf_hub_download, snapshot_download


def same_tree(got: Path, want: Path) -> None:
    want_files = sorted(p.relative_to(want) for p in want.rglob("*") if p.is_file())
    got_files = sorted(p.relative_to(got) for p in got.rglob("*") if p.is_file())
    assert got_files == want_files, f"file lists differ: {got_files} vs {want_files}"
    for rel in want_files:
        assert filecmp.cmp(got / rel, want / rel, shallow=False), f"{rel} differs"


def main() -> None:
    repo_id, source, cache = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    print(f"HF_ENDPOINT={os.environ['HF_ENDPOINT']}")
    for repo_type in ("model", "dataset"):
        folder = snapshot_download(repo_id, repo_type=repo_type, cache_dir=cache / repo_type)
        same_tree(Path(folder), source)
        print(f"snapshot_download ({repo_type}): {len(list(Path(folder).rglob('*.*')))} files identical")
    biggest = max((p for p in source.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    rel = biggest.relative_to(source).as_posix()
    path = hf_hub_download(repo_id, rel, cache_dir=cache / "single", revision="main")
    assert filecmp.cmp(path, biggest, shallow=False), f"{rel} differs"
    print(f"hf_hub_download: {rel} ({biggest.stat().st_size} bytes) identical")
    try:
        hf_hub_download(repo_id, "no-such-file.bin", cache_dir=cache / "missing")
    except Exception as e:  # the client's own EntryNotFoundError
        assert "EntryNotFound" in type(e).__name__, f"unexpected error {type(e).__name__}: {e}"
        print(f"a missing file: {type(e).__name__}")
    else:
        raise AssertionError("a missing file must fail")


if __name__ == "__main__":
    main()
