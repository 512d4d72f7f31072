#!/usr/bin/env bash
# The README's demo: make a small sample dataset, add it, list the store, export it,
# check the export is byte-identical, verify the store, remove the dataset.
# Uses a throw-away data dir so it never touches your own store.
set -euo pipefail
commons=${1:?usage: demo.sh path/to/commons}
work=$(mktemp -d "${TMPDIR:-/tmp}/commons-demo.XXXXXX")
trap 'rm -rf "$work"' EXIT
export COMMONS_DATA_DIR="$work/data"

run() { printf '\n$ %s\n' "$*"; "$@"; }

echo "== sample dataset in $work/sample-dataset"
mkdir -p "$work/sample-dataset/data" "$work/sample-dataset/model"
head -c $((8 << 20)) /dev/urandom > "$work/sample-dataset/model/weights.safetensors"
head -c $((3 << 20)) /dev/urandom > "$work/sample-dataset/data/train-00000.parquet"
cp "$work/sample-dataset/data/train-00000.parquet" "$work/sample-dataset/data/copy.parquet"
printf '# Sample dataset\nMade by the Commons demo.\n' > "$work/sample-dataset/README.md"

run "$commons" add "$work/sample-dataset"
hash=$("$commons" --json add "$work/sample-dataset" | sed -E 's/.*"hash":"([0-9a-f]+)".*/\1/')
run "$commons" ls
run "$commons" export "$hash" "$work/exported"
run diff -r "$work/sample-dataset" "$work/exported"
echo "export is byte-identical"
run "$commons" verify
run "$commons" rm "$hash"
run "$commons" ls
echo
echo "demo finished: add, ls, export (verified, byte-identical), verify and rm all worked"
