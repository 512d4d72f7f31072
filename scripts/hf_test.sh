#!/usr/bin/env bash
# End-to-end: the official `huggingface_hub` client (from PyPI, in a virtualenv) downloads a
# small model through a Commons node's HTTP gateway via HF_ENDPOINT, byte-identical.
# Usage: scripts/hf_test.sh <path to the commons binary>. Run by `make test`.
set -euo pipefail

COMMONS=${1:?usage: hf_test.sh <commons binary>}
VENV=${HF_VENV:-$HOME/.cache/commons/hf-venv}
HF_VERSION=2.4.0

if ! "$VENV/bin/python" -c "import huggingface_hub, sys; sys.exit(huggingface_hub.__version__ != '$HF_VERSION')" 2>/dev/null; then
  echo "installing huggingface_hub $HF_VERSION into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q "huggingface_hub==$HF_VERSION"
fi

WORK=$(mktemp -d)
NODE_PID=
cleanup() {
  if [ -n "$NODE_PID" ]; then kill "$NODE_PID" 2>/dev/null || true; wait "$NODE_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

# A small "model": a config, a tokenizer, a 3 MiB weights file, a file in a subfolder.
MODEL="$WORK/tiny-model"
mkdir -p "$MODEL/onnx"
echo '{"architectures": ["TinyModel"], "hidden_size": 64}' > "$MODEL/config.json"
echo '{"version": "1.0", "vocab": {"a": 0, "b": 1}}' > "$MODEL/tokenizer.json"
head -c $((3 * 1024 * 1024 + 123)) /dev/urandom > "$MODEL/model.safetensors"
head -c 70000 /dev/urandom > "$MODEL/onnx/model.onnx"

DATA="$WORK/node"
ROOT=$("$COMMONS" --data-dir "$DATA" --json add "$MODEL" --name lab/tiny-model |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["hash"])')
printf '[gateway]\nlisten = "127.0.0.1:0"\n' > "$WORK/commons.toml"
"$COMMONS" --data-dir "$DATA" --json --config "$WORK/commons.toml" node run \
  --listen /ip4/127.0.0.1/udp/0/quic-v1 > "$WORK/ready.json" &
NODE_PID=$!
for _ in $(seq 300); do
  [ -s "$WORK/ready.json" ] && break
  kill -0 "$NODE_PID" 2>/dev/null || { echo "the node did not start"; exit 1; }
  sleep 0.1
done
GATEWAY=$(python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).readline())["gateway"])' "$WORK/ready.json")
echo "gateway: $GATEWAY"

HF_ENDPOINT="$GATEWAY" HF_HUB_DISABLE_TELEMETRY=1 HF_HUB_DISABLE_PROGRESS_BARS=1 HF_TOKEN= \
  "$VENV/bin/python" "$(dirname "$0")/hf_check.py" lab/tiny-model "$MODEL" "$WORK/hf-cache"
echo "huggingface_hub through the gateway: ok"

# The client's cache holds the snapshot as links into ../../blobs: adding it follows them
# and gives the very same dataset (same files, same hash).
SNAPSHOT=$(echo "$WORK"/hf-cache/model/models--lab--tiny-model/snapshots/*)
AGAIN=$("$COMMONS" --data-dir "$WORK/other" --json add "$SNAPSHOT" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["hash"])')
if [ "$AGAIN" != "$ROOT" ]; then
  echo "adding the downloaded snapshot gave $AGAIN, not $ROOT"; exit 1
fi
echo "commons add of the Hugging Face snapshot folder: same dataset $ROOT"
