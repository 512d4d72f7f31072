"""Reads repositories through a Commons gateway with the official Hugging Face clients, as a
user would (HF_ENDPOINT), and checks every answer against the source folders.

Usage (HF_ENDPOINT=http://<gateway>):
    python hf_check.py --cache DIR --hf PATH_TO_hf_CLI
        --local ORG/NAME=FOLDER        a folder added with `commons add` (BLAKE3 ids)
        --local-ids ORG/NAME=FOLDER    the same added with `--hub-ids`
        --model ORG/NAME=FOLDER@COMMIT a model imported from a Hub origin at that commit
        --dataset ORG/NAME=FOLDER@COMMIT  a dataset imported likewise
"""

import argparse
import filecmp
import os
import subprocess
import sys
from pathlib import Path

import datasets
from huggingface_hub import (
    HfApi,
    HfFileSystem,
    _CACHED_NO_EXIST,
    hf_hub_download,
    snapshot_download,
    try_to_load_from_cache,
)
from huggingface_hub.errors import EntryNotFoundError
from huggingface_hub.hf_api import RepoFile, RepoFolder
from huggingface_hub.utils import get_session

REQUESTS: list[str] = []


def count_requests() -> None:
    """Records every request the shared client sends (`huggingface_hub` and `HfFileSystem`
    use it), so a check can say how many a call made."""
    session = get_session()
    hooks = session.event_hooks
    hooks["request"].append(lambda request: REQUESTS.append(f"{request.method} {request.url}"))
    session.event_hooks = hooks


def files_of(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def same_tree(got: Path, want: Path) -> None:
    assert files_of(got) == files_of(want), f"file lists differ: {files_of(got)} vs {files_of(want)}"
    for rel in files_of(want):
        assert filecmp.cmp(got / rel, want / rel, shallow=False), f"{rel} differs"


def hf_cache_verify(hf: str, repo: str, repo_type: str, cache: Path) -> None:
    """`hf cache verify` of the cached snapshot against the gateway's listing: every file's
    SHA-256 (LFS) or git blob id (others) must match, nothing missing, nothing extra."""
    cmd = [hf, "cache", "verify", repo, "--repo-type", repo_type, "--cache-dir", str(cache),
           "--fail-on-missing-files", "--fail-on-extra-files", "--format", "human"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, f"{' '.join(cmd)}: {done.stdout}{done.stderr}"
    verified = [line for line in done.stdout.splitlines() if "All checksums match" in line]
    assert verified, done.stdout
    print(f"hf cache verify {repo} ({repo_type}): {verified[0].strip()}")


def missing_file(repo: str, cache: Path) -> None:
    """A missing file raises the client's own EntryNotFoundError."""
    try:
        hf_hub_download(repo, "no-such-file.bin", cache_dir=cache)
    except EntryNotFoundError as e:
        print(f"a missing file: {type(e).__name__}")
    else:
        raise AssertionError("a missing file must fail")


def check_local(repo: str, source: Path, cache: Path) -> None:
    """A folder added as it is: downloads as a model and as a dataset, byte-identical."""
    for repo_type in ("model", "dataset"):
        folder = snapshot_download(repo, repo_type=repo_type, cache_dir=cache / repo_type)
        same_tree(Path(folder), source)
        print(f"snapshot_download {repo} ({repo_type}): {len(files_of(source))} files identical")
    biggest = max((p for p in source.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    rel = biggest.relative_to(source).as_posix()
    path = hf_hub_download(repo, rel, cache_dir=cache / "single", revision="main")
    assert filecmp.cmp(path, biggest, shallow=False), f"{rel} differs"
    print(f"hf_hub_download {repo}: {rel} ({biggest.stat().st_size} bytes) identical")
    missing_file(repo, cache / "missing")


def check_local_ids(repo: str, source: Path, cache: Path, hf: str) -> None:
    """A folder added with --hub-ids: its snapshot passes `hf cache verify`."""
    snapshot_download(repo, cache_dir=cache)
    hf_cache_verify(hf, repo, "model", cache)


def check_missing_is_cached(repo: str, commit: str, cache: Path) -> None:
    """A missing file asked for once is remembered as missing for the commit (`.no_exist`):
    the client's loaders (`try_to_load_from_cache`, which `transformers` asks first) do not
    ask the gateway again."""
    name = "generation_config.json"
    for attempt in (1, 2):
        before = len(REQUESTS)
        found = try_to_load_from_cache(repo, name, cache_dir=cache)
        if found is _CACHED_NO_EXIST:
            assert attempt == 2, "nothing is known before the first request"
            assert len(REQUESTS) == before, REQUESTS[before:]
            break
        try:
            hf_hub_download(repo, name, cache_dir=cache)
        except EntryNotFoundError:
            pass
        else:
            raise AssertionError(f"{name} must be missing")
        asked = REQUESTS[before:]
        assert len(asked) == 1 and asked[0].startswith("HEAD "), asked
    else:
        raise AssertionError("the missing file was not cached as missing")
    marker = cache / f"models--{repo.replace('/', '--')}" / ".no_exist" / commit / name
    assert marker.is_file(), f"no {marker}"
    print(f"a missing file: EntryNotFoundError once (1 request), then known missing for {commit[:12]} (0 requests)")


def all_pages(url: str, limit: int) -> tuple[list[str], int]:
    """Every path of a recursive tree listing read `limit` entries a page, following `Link`."""
    paths, pages, next_url = [], 0, f"{url}?recursive=true&limit={limit}"
    while next_url:
        response = get_session().get(next_url)
        response.raise_for_status()
        paths += [e["path"] for e in response.json()]
        pages += 1
        next_url = response.links.get("next", {}).get("url")
    return paths, pages


def check_hub_model(repo: str, source: Path, commit: str, cache: Path, hf: str) -> None:
    """A model imported from a Hub origin: the Hub's commit, ids, listings and refs."""
    api = HfApi()
    info = api.model_info(repo, files_metadata=True)
    assert info.sha == commit, f"sha {info.sha}, not the upstream commit {commit}"
    assert info.last_modified is not None and info.created_at is not None
    # `cardData: {}` reads as no card data, as for a Hub repository without a README card.
    assert info.pipeline_tag is None and info.card_data is None
    siblings = {s.rfilename: s for s in info.siblings}
    assert sorted(siblings) == files_of(source), sorted(siblings)
    weights = siblings["model.safetensors"]
    assert weights.lfs is not None and len(weights.lfs.sha256) == 64 and len(weights.blob_id) == 40
    print(f"model_info {repo}: sha = upstream commit, lastModified {info.last_modified.isoformat()}")

    folder = Path(snapshot_download(repo, cache_dir=cache))
    same_tree(folder, source)
    assert folder.name == commit, f"snapshot folder {folder.name}"
    blobs = sorted(p.name for p in (folder.parent.parent / "blobs").iterdir())
    assert weights.lfs.sha256 in blobs, f"the LFS file's blob is named by its SHA-256: {blobs}"
    print(f"snapshot_download {repo}: {len(files_of(source))} files identical, in snapshots/{commit[:12]}")
    hf_cache_verify(hf, repo, "model", cache)

    nested = "nested/deeper/notes.txt"
    path = hf_hub_download(repo, nested, revision=commit, cache_dir=cache / "by-commit")
    assert filecmp.cmp(path, source / nested, shallow=False)
    print(f"hf_hub_download {repo}@{commit[:12]} {nested}: identical")

    tree = list(api.list_repo_tree(repo, recursive=True))
    folders = sorted(e.path for e in tree if isinstance(e, RepoFolder))
    assert folders == ["nested", "nested/deeper"], folders
    listed = sorted(e.path for e in tree if isinstance(e, RepoFile))
    assert listed == files_of(source), listed
    paths, pages = all_pages(f"{os.environ['HF_ENDPOINT']}/api/models/{repo}/tree/main", 2)
    assert paths == [e.path for e in tree] and pages == 3, (paths, pages)
    print(f"list_repo_tree {repo}: files and folders; {pages} pages of 2 through Link")

    info = api.get_paths_info(repo, ["config.json", "nested", "nope", "model.safetensors"])
    kinds = [(type(e).__name__, e.path) for e in info]
    assert kinds == [("RepoFile", "config.json"), ("RepoFolder", "nested"), ("RepoFile", "model.safetensors")], kinds
    assert info[2].lfs is not None and info[2].lfs.sha256 == weights.lfs.sha256
    refs = api.list_repo_refs(repo)
    assert [(b.name, b.target_commit) for b in refs.branches] == [("main", commit)], refs
    print(f"get_paths_info, list_repo_refs {repo}: ok")

    check_missing_is_cached(repo, commit, cache / "missing")


def fs_answers(repo: str) -> tuple:
    """What a fresh HfFileSystem says of dataset `repo`, asked twice (the second answer may
    come from its cache: it must be the same)."""
    fs = HfFileSystem(skip_instance_cache=True)
    root = f"datasets/{repo}"
    answers = []
    for _ in range(2):
        answers.append((
            sorted(fs.ls(root, detail=False)),
            sorted(fs.glob(f"{root}/data/**/*.parquet")),
            sorted(fs.find(root)),
            fs.info(f"{root}/data/train")["type"],
        ))
    assert answers[0] == answers[1], answers
    return answers[0]


def check_hub_dataset(repo: str, source: Path, commit: str, cache: Path, hf: str) -> None:
    """A dataset imported from a Hub origin: `datasets`, `HfFileSystem`, `hf cache verify`."""
    folder = Path(snapshot_download(repo, repo_type="dataset", cache_dir=cache))
    same_tree(folder, source)
    assert folder.name == commit
    hf_cache_verify(hf, repo, "dataset", cache)

    root = f"datasets/{repo}"
    want = (
        sorted(f"{root}/{p.name}" for p in source.iterdir()),
        sorted(f"{root}/{p}" for p in files_of(source) if p.endswith(".parquet")),
        [f"{root}/{p}" for p in files_of(source)],
        "directory",
    )
    first, second = fs_answers(repo), fs_answers(repo)
    assert first == second == want, (first, want)
    print(f"HfFileSystem ls/glob/find/info {repo}: the same answers twice, as the folder")

    datasets.disable_progress_bars()
    ds_cache = str(cache / "datasets")
    splits = datasets.load_dataset(repo, cache_dir=ds_cache)
    assert {k: v.num_rows for k, v in splits.items()} == {"train": 5, "test": 1}, splits
    nested = datasets.load_dataset(repo, data_dir="data/train", cache_dir=ds_cache)
    assert sorted(nested["train"]["id"]) == [1, 2, 3, 4, 5], nested
    top = datasets.load_dataset(repo, data_files="top.csv", revision=commit, cache_dir=ds_cache)
    assert top["train"]["text"] == ["a", "b", "c", "d"], top
    print(f"load_dataset {repo}: splits train 5 / test 1; data_dir=data/train 5 rows; top.csv at {commit[:12]}")

    offline = subprocess.run(
        [sys.executable, "-c",
         "import sys; from huggingface_hub import snapshot_download; "
         "print(snapshot_download(sys.argv[1], repo_type='dataset', cache_dir=sys.argv[2]))",
         repo, str(cache)],
        capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert offline.returncode == 0 and Path(offline.stdout.strip()) == folder, offline
    print(f"snapshot_download {repo} with HF_HUB_OFFLINE=1: the cached snapshot")


def repo_and_folder(spec: str) -> tuple[str, Path, str]:
    """`org/name=FOLDER[@COMMIT]`."""
    repo, rest = spec.split("=", 1)
    folder, _, commit = rest.partition("@")
    return repo, Path(folder), commit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    for option in ("--cache", "--hf", "--local", "--local-ids", "--model", "--dataset"):
        parser.add_argument(option, required=True)
    args = parser.parse_args()
    cache = Path(args.cache)
    print(f"HF_ENDPOINT={os.environ['HF_ENDPOINT']}")
    count_requests()
    repo, folder, _ = repo_and_folder(args.local)
    check_local(repo, folder, cache / "local")
    repo, folder, _ = repo_and_folder(args.local_ids)
    check_local_ids(repo, folder, cache / "local-ids", args.hf)
    repo, folder, commit = repo_and_folder(args.model)
    check_hub_model(repo, folder, commit, cache / "hub-model", args.hf)
    repo, folder, commit = repo_and_folder(args.dataset)
    check_hub_dataset(repo, folder, commit, cache / "hub-data", args.hf)


if __name__ == "__main__":
    main()
