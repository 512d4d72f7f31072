#!/usr/bin/env bash
# End-to-end: the official Hugging Face clients (`huggingface_hub`, its `hf` CLI and
# `datasets`, from PyPI, in a virtualenv) read through a Commons node's HTTP gateway via
# HF_ENDPOINT as they read from the Hub, on loopback only:
# - a folder added with `commons add` (BLAKE3 ids), and the same with `--hub-ids`;
# - a model and a dataset imported from a test Hub origin (`hub-origin`, built beside
#   `commons`) with `commons add hf://…`, served with the Hub's ids and commits after the
#   origin is stopped: downloads byte-identical, `hf cache verify` clean, `load_dataset`,
#   `HfFileSystem`, a missing file cached as missing, a download by upstream commit;
# - the same two packed into a bundle and written into a fresh Hugging Face cache with no
#   store (`unpack --hf-cache`): loaded from it with HF_HUB_OFFLINE=1 and no server.
# Usage: scripts/hf_test.sh <path to the commons binary>. Run by `make test`.
set -euo pipefail

COMMONS=${1:?usage: hf_test.sh <commons binary>}
HUB_ORIGIN=$(dirname "$COMMONS")/hub-origin
VENV=${HF_VENV:-$HOME/.cache/commons/hf-venv}
HF_VERSION=2.4.0
# The newest `datasets` at the time of writing; it accepts huggingface_hub >=1.31,<3.
DATASETS_VERSION=5.2.0

[ -x "$HUB_ORIGIN" ] || { echo "no $HUB_ORIGIN: build the workspace (make build)"; exit 1; }
if ! "$VENV/bin/python" -c "import huggingface_hub, sys; sys.exit(huggingface_hub.__version__ != '$HF_VERSION')" 2>/dev/null; then
  echo "installing huggingface_hub $HF_VERSION into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q "huggingface_hub==$HF_VERSION"
fi
if ! "$VENV/bin/python" -c "import datasets, sys; sys.exit(datasets.__version__ != '$DATASETS_VERSION')" 2>/dev/null; then
  echo "installing datasets $DATASETS_VERSION into $VENV"
  "$VENV/bin/pip" install -q "datasets==$DATASETS_VERSION" "huggingface_hub==$HF_VERSION"
fi

WORK=$(mktemp -d)
NODE_PID=
ORIGIN_PID=
stop() { # stop PID: ends a process this script started, and waits for it
  if [ -n "$1" ]; then kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; fi
}
cleanup() {
  stop "$NODE_PID"
  stop "$ORIGIN_PID"
  rm -rf "$WORK"
}
trap cleanup EXIT

# Waits until file $1 has a line (written by process $2), at most 30 s.
wait_for_line() {
  for _ in $(seq 300); do
    [ -s "$1" ] && return 0
    kill -0 "$2" 2>/dev/null || { echo "process $2 ended before writing $1"; cat "$1.err" 2>/dev/null; exit 1; }
    sleep 0.1
  done
  echo "nothing in $1 after 30 s"; exit 1
}
# json_field FILE KEY...: a field of the JSON object on FILE's first line.
json_field() {
  python3 -c 'import json,sys
v = json.loads(open(sys.argv[1]).readline())
for k in sys.argv[2:]: v = v[k]
print(v)' "$@"
}
hash_of() { python3 -c 'import json,sys; print(json.load(sys.stdin)["hash"])'; }

# A small local "model": a config, a tokenizer, a 3 MiB weights file, a file in a subfolder.
MODEL="$WORK/tiny-model"
mkdir -p "$MODEL/onnx"
echo '{"architectures": ["TinyModel"], "hidden_size": 64}' > "$MODEL/config.json"
echo '{"version": "1.0", "vocab": {"a": 0, "b": 1}}' > "$MODEL/tokenizer.json"
head -c $((3 * 1024 * 1024 + 123)) /dev/urandom > "$MODEL/model.safetensors"
head -c 70000 /dev/urandom > "$MODEL/onnx/model.onnx"

# Repositories on the test Hub origin: a model (a config, a small LFS weights file, a file
# two folders down) and a dataset (a CSV at the top, Parquet splits under data/).
HUB_MODEL="$WORK/hub-model"
mkdir -p "$HUB_MODEL/nested/deeper"
echo '{"architectures": ["Tiny"], "hidden_size": 8}' > "$HUB_MODEL/config.json"
head -c 100000 /dev/urandom > "$HUB_MODEL/model.safetensors"
echo 'two folders down' > "$HUB_MODEL/nested/deeper/notes.txt"
HUB_DATA="$WORK/hub-data"
mkdir -p "$HUB_DATA/data/train" "$HUB_DATA/data/test"
printf 'id,text\n1,a\n2,b\n3,c\n4,d\n' > "$HUB_DATA/top.csv"
"$VENV/bin/python" - "$HUB_DATA/data" <<'EOF'
import sys
import pyarrow as pa, pyarrow.parquet as pq
rows = {"train/part-0.parquet": [1, 2, 3], "train/part-1.parquet": [4, 5], "test/part-0.parquet": [6]}
for path, ids in rows.items():
    pq.write_table(pa.table({"id": ids, "text": [f"row {i}" for i in ids]}), f"{sys.argv[1]}/{path}")
EOF

"$HUB_ORIGIN" --repo model:acme/tiny="$HUB_MODEL" --repo dataset:acme/data="$HUB_DATA" \
  > "$WORK/origin.json" 2> "$WORK/origin.json.err" &
ORIGIN_PID=$!
wait_for_line "$WORK/origin.json" "$ORIGIN_PID"
ORIGIN=$(json_field "$WORK/origin.json" url)
MODEL_COMMIT=$(json_field "$WORK/origin.json" repos acme/tiny)
DATA_COMMIT=$(json_field "$WORK/origin.json" repos acme/data)
echo "test Hub origin: $ORIGIN"

DATA="$WORK/node"
ROOT=$("$COMMONS" --data-dir "$DATA" --json add "$MODEL" --name lab/tiny-model | hash_of)
"$COMMONS" --data-dir "$DATA" --json add "$MODEL" --name lab/tiny-ids --hub-ids > /dev/null
HUB_MODEL_ROOT=$("$COMMONS" --data-dir "$DATA" --json add hf://acme/tiny --origin "$ORIGIN" | hash_of)
HUB_DATA_ROOT=$("$COMMONS" --data-dir "$DATA" --json add hf://datasets/acme/data --origin "$ORIGIN" | hash_of)
# Everything below is served by the node alone.
stop "$ORIGIN_PID"
ORIGIN_PID=

printf '[gateway]\nlisten = "127.0.0.1:0"\n' > "$WORK/commons.toml"
"$COMMONS" --data-dir "$DATA" --json --config "$WORK/commons.toml" node run \
  --listen /ip4/127.0.0.1/udp/0/quic-v1 > "$WORK/ready.json" 2> "$WORK/ready.json.err" &
NODE_PID=$!
wait_for_line "$WORK/ready.json" "$NODE_PID"
GATEWAY=$(json_field "$WORK/ready.json" gateway)
echo "gateway: $GATEWAY"

HF_ENDPOINT="$GATEWAY" HF_HOME="$WORK/hf-home" HF_TOKEN= HF_HUB_DISABLE_TELEMETRY=1 \
  HF_HUB_DISABLE_PROGRESS_BARS=1 HF_HUB_DISABLE_XET=1 DO_NOT_TRACK=1 NO_COLOR=1 \
  "$VENV/bin/python" "$(dirname "$0")/hf_check.py" --cache "$WORK/hf-cache" --hf "$VENV/bin/hf" \
  --local lab/tiny-model="$MODEL" --local-ids lab/tiny-ids="$MODEL" \
  --model acme/tiny="$HUB_MODEL@$MODEL_COMMIT" --dataset acme/data="$HUB_DATA@$DATA_COMMIT"
echo "huggingface_hub, hf and datasets through the gateway: ok"

# A Hub cache snapshot added as it is records its commit (read from its path) but is bound
# as main only: the gateway answers for that commit all the same.
SNAP=$(echo "$WORK"/hf-cache/hub-model/models--acme--tiny/snapshots/*)
"$COMMONS" --data-dir "$DATA" --json add "$SNAP" --name snap/tiny > /dev/null
python3 - "$GATEWAY/snap/tiny/resolve/$MODEL_COMMIT/config.json" "$MODEL_COMMIT" \
  "$HUB_MODEL/config.json" <<'PY'
import sys, urllib.request
url, commit, source = sys.argv[1:]
with urllib.request.urlopen(url) as r:
    assert r.headers["X-Repo-Commit"] == commit, r.headers
    assert r.read() == open(source, "rb").read(), "config.json differs"
PY
echo "a snapshot bound as main only: resolves by its upstream commit"

# The client's cache holds the snapshot as links into ../../blobs: adding it follows them
# and, without Hub ids (which a snapshot folder gets by default, with its commit), gives
# the very same dataset (same files, same hash).
SNAPSHOT=$(echo "$WORK"/hf-cache/local/model/models--lab--tiny-model/snapshots/*)
AGAIN=$("$COMMONS" --data-dir "$WORK/other" --json add "$SNAPSHOT" --no-hub-ids | hash_of)
if [ "$AGAIN" != "$ROOT" ]; then
  echo "adding the downloaded snapshot gave $AGAIN, not $ROOT"; exit 1
fi
echo "commons add --no-hub-ids of the Hugging Face snapshot folder: same dataset $ROOT"

# Carried where no network reaches: the model and the dataset from the Hub packed into one
# bundle, written with no store into a fresh Hugging Face cache, then loaded from it by the
# Hub's clients offline (no origin, no node in the way: the endpoint is a closed port).
"$COMMONS" --data-dir "$DATA" --json pack "$HUB_MODEL_ROOT" "$HUB_DATA_ROOT" -o "$WORK/hub.tar" > /dev/null
"$COMMONS" --data-dir "$WORK/no-store" --json unpack "$WORK/hub.tar" --hf-cache "$WORK/offline-cache" > /dev/null
[ ! -e "$WORK/no-store" ] || { echo "unpack --hf-cache opened a store"; exit 1; }
HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 HF_ENDPOINT=http://127.0.0.1:9 HF_HOME="$WORK/offline-home" \
  HF_HUB_DISABLE_PROGRESS_BARS=1 HF_HUB_DISABLE_TELEMETRY=1 \
  "$VENV/bin/python" - "$WORK/offline-cache" model acme/tiny "$HUB_MODEL" "$MODEL_COMMIT" \
  dataset acme/data "$HUB_DATA" "$DATA_COMMIT" <<'PY'
import os, sys
from huggingface_hub import hf_hub_download, snapshot_download
import datasets
cache, args = sys.argv[1], sys.argv[2:]
for kind, repo, source, commit in zip(*[iter(args)] * 4):
    count = 0
    for folder, _, names in os.walk(source):
        for name in names:
            path = os.path.join(folder, name)
            rel = os.path.relpath(path, source)
            got = hf_hub_download(repo, rel, repo_type=kind, cache_dir=cache)
            assert f"/snapshots/{commit}/" in got, got
            assert open(got, "rb").read() == open(path, "rb").read(), rel
            count += 1
    print(f"offline hf_hub_download {repo}: {count} files identical, commit {commit[:12]}")
snapshot = snapshot_download("acme/data", repo_type="dataset", cache_dir=cache)
datasets.disable_progress_bars()
splits = datasets.load_dataset(snapshot, cache_dir=os.path.join(os.environ["HF_HOME"], "ds"))
assert {k: v.num_rows for k, v in splits.items()} == {"train": 5, "test": 1}, splits
print("offline load_dataset acme/data from the unpacked cache: train 5 / test 1")
PY
echo "a bundle unpacked into a Hugging Face cache loads offline: ok"
