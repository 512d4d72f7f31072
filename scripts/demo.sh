#!/usr/bin/env bash
# The README's demo, the first-run path of a new user: make a small sample dataset, add it
# (its ticket names no address yet), list the store, export it, check the export is
# byte-identical, verify the store, serve it from a node (whose ticket names it) and fetch
# it into a second data dir over QUIC on loopback (by ticket, stopped midway and resumed,
# re-run, its files listed, then by hash alone through the DHT), serve it to plain HTTP
# clients through the node's gateway, then remove it.
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
hash=$("$commons" --json add "$work/sample-dataset" --name demo/sample | sed -E 's/.*"hash":"([0-9a-f]+)".*/\1/')
run "$commons" ls
run "$commons" export "$hash" "$work/exported"
run diff -r "$work/sample-dataset" "$work/exported"
echo "export is byte-identical"
run "$commons" verify

echo
echo "== a second node fetches it over QUIC (loopback), verifying every 16 KiB"
# --dht-mode server: on loopback the node is not publicly reachable, so `auto` would make it
# a DHT client that answers no lookups.
# Its config also turns on the read-only HTTP gateway on a free loopback port.
printf '[gateway]\nlisten = "127.0.0.1:0"\n' > "$work/node.toml"
"$commons" --json --config "$work/node.toml" node run --listen /ip4/127.0.0.1/udp/0/quic-v1 --dht-mode server > "$work/node.out" &
node_pid=$!
trap 'kill "$node_pid" 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 100); do [ -s "$work/node.out" ] && break; sleep 0.1; done
ticket=$(sed -E 's/.*"ticket":"(commons1[a-z0-9]+)".*/\1/' "$work/node.out")
echo "node A serves $hash; ticket: $ticket"
# Data dir B downloads at 4 MiB/s (its config file), and this first fetch is stopped after
# a second with SIGTERM, as Ctrl-C would: what arrived is kept, and the second run resumes.
mkdir -p "$work/data-b"
printf '[limits]\ndownload_mib_per_sec = 4\n' > "$work/data-b/config.toml"
printf '\n$ %s\n' "timeout -s TERM 1 commons get $ticket   # stopped after a second"
status=0
env COMMONS_DATA_DIR="$work/data-b" timeout -s TERM 1 "$commons" get "$ticket" || status=$?
[ "$status" = 124 ] || { echo "expected the first fetch to be stopped midway (status $status)"; exit 1; }
run env COMMONS_DATA_DIR="$work/data-b" "$commons" ls
run env COMMONS_DATA_DIR="$work/data-b" "$commons" get "$ticket" -o "$work/fetched"
run diff -r "$work/sample-dataset" "$work/fetched"
echo "resumed, and the fetched copy is byte-identical"
echo "running the same command again is safe: files already there are checked and kept"
run env COMMONS_DATA_DIR="$work/data-b" "$commons" get "$ticket" -o "$work/fetched"
run env COMMONS_DATA_DIR="$work/data-b" "$commons" ls "$hash"

echo
echo "== a third data dir knows only the hash: it finds node A through the DHT"
addr=$(sed -E 's/.*"addrs":\["([^"]+)".*/\1/' "$work/node.out")
run env COMMONS_DATA_DIR="$work/data-c" "$commons" providers "$hash" --bootstrap "$addr"
run env COMMONS_DATA_DIR="$work/data-c" "$commons" get "$hash" --bootstrap "$addr" -o "$work/by-hash"
run diff -r "$work/sample-dataset" "$work/by-hash"
echo "fetched by hash alone, byte-identical"

echo
echo "== plain HTTP clients read it from node A's gateway, by name, verified as it is sent"
gateway=$(sed -E 's/.*"gateway":"([^"]+)".*/\1/' "$work/node.out")
run curl -sf "$gateway/dataset/demo/sample"
echo
run curl -sf -o "$work/weights.http" "$gateway/dataset/demo/sample/model/weights.safetensors"
run cmp "$work/weights.http" "$work/sample-dataset/model/weights.safetensors"
echo "downloaded over HTTP, byte-identical"
run curl -sf -r 0-1023 -o "$work/first-kib" "$gateway/dataset/demo/sample/model/weights.safetensors"
run cmp "$work/first-kib" <(head -c 1024 "$work/sample-dataset/model/weights.safetensors")
echo "a byte range, byte-identical"
run "$commons" node status
kill "$node_pid"; wait "$node_pid" 2>/dev/null || true

run "$commons" rm "$hash"
run "$commons" ls
echo
echo "demo finished: add, ls, export, verify, fetches by ticket (stopped and resumed) and by hash, the HTTP gateway and rm all worked"
