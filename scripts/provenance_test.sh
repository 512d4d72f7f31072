#!/usr/bin/env bash
# End-to-end: Commons publisher keys and dataset signatures against the reference OpenSSF
# Model Signing implementation (PyPI `model-signing`: its `model_signing` CLI, SHA-256 only,
# and its Python API through openssf_check.py for BLAKE3), in the virtualenv hf_test.sh
# uses. Key signing only: everything stays on the local disk, nothing goes on the network
# (beyond installing model-signing from PyPI once).
# a. Commons → reference: a P-256 key made by Commons, a folder added and signed, exported:
#    the reference verifies the export (BLAKE3); a flipped data byte and another key are refused;
# b. reference → Commons, SHA-256: a folder signed by the reference CLI with an openssl key,
#    `commons add`ed: `commons verify --publisher` accepts that key and refuses another;
#    export writes model.sig back byte-identical and the reference CLI verifies it;
# c. the same with a folder the reference Python API signed with BLAKE3;
# d. a model.sig with one signature byte changed, or made for other data, is never accepted;
# e. the openssl key imported into Commons: what Commons signs with it verifies against the
#    openssl public key, with the same key hint the reference writes;
# f. two publishers' signatures on one dataset: `export --publisher` writes the chosen one.
# Usage: scripts/provenance_test.sh <path to the commons binary>.
set -euo pipefail

COMMONS=${1:?usage: provenance_test.sh <commons binary>}
HERE=$(cd "$(dirname "$0")" && pwd)
VENV=${HF_VENV:-$HOME/.cache/commons/hf-venv}
MODEL_SIGNING_VERSION=1.1.1
# model_signing imports OpenSSL (pyOpenSSL) but does not declare it.
PYOPENSSL_VERSION=26.4.0

[ -x "$COMMONS" ] || { echo "no $COMMONS: build the workspace (make build)"; exit 1; }
command -v openssl > /dev/null || { echo "openssl is needed (to make keys as users do)"; exit 1; }
if ! "$VENV/bin/python" -c "import importlib.metadata as m, sys, OpenSSL
sys.exit(m.version('model-signing') != '$MODEL_SIGNING_VERSION')" 2>/dev/null; then
  echo "installing model-signing $MODEL_SIGNING_VERSION into $VENV"
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q "model-signing==$MODEL_SIGNING_VERSION" "pyopenssl==$PYOPENSSL_VERSION"
fi
PY="$VENV/bin/python"
MS="$VENV/bin/model_signing"
CHECK="$HERE/openssf_check.py"

WORK=$(mktemp -d)
cleanup() { rm -rf "$WORK"; }
trap cleanup EXIT

fail() { echo "FAIL: $*" >&2; exit 1; }
# cm DATA_DIR ARGS...: commons on that data dir.
cm() { "$COMMONS" --data-dir "$1" "${@:2}"; }
hash_of() { python3 -c 'import json,sys; print(json.load(sys.stdin)["hash"])'; }
# field KEY: a field of the JSON object on stdin.
field() { python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }
# hint_of SIG: the key hint in a model.sig.
hint_of() {
  python3 -c 'import json,sys
print(json.load(open(sys.argv[1]))["verificationMaterial"]["publicKey"].get("hint") or "")' "$1"
}
# add DATA_DIR FOLDER [ARGS...]: `commons --json add`, prints the dataset hash.
add() {
  local out
  out=$(cm "$1" --json add "${@:2}") || fail "commons add ${*:2} failed: $out"
  printf '%s\n' "$out" | hash_of
}
# passes WHAT CMD...: CMD must succeed.
passes() {
  local what=$1 out
  shift
  out=$("$@" 2>&1) || fail "$what: failed (status $?): $out"
}
# refused WHAT PATTERN CMD...: CMD must be refused: status 1 (not 0, not a crash), with the
# extended regular expression PATTERN (any case) in what it prints.
refused() {
  local what=$1 pattern=$2 out rc=0
  shift 2
  out=$("$@" 2>&1) || rc=$?
  [ "$rc" -ne 0 ] || fail "$what: expected a refusal, but it passed: $out"
  [ "$rc" -eq 1 ] || fail "$what: expected status 1, got $rc: $out"
  grep -Eqi -- "$pattern" <<< "$out" || fail "$what: refused without /$pattern/: $out"
}
# commons_accepts DATA_DIR ROOT PUBLISHER: `commons verify --publisher` passes, and its
# --json report lists the signature.
commons_accepts() {
  passes "commons verify $2 --publisher $3" cm "$1" verify "$2" --publisher "$3"
  local out
  out=$(cm "$1" --json verify "$2" --publisher "$3") || fail "commons --json verify $2 --publisher $3: $out"
  python3 -c 'import json,sys
v = json.loads(sys.argv[1])
s = v.get("signatures")
assert isinstance(s, list) and s, f"no signatures listed: {v}"' "$out" \
    || fail "commons --json verify $2 --publisher $3 lists no signature"
}
# commons_refuses WHAT DATA_DIR ROOT PUBLISHER: `commons verify --publisher` fails, saying
# it is about the signature.
commons_refuses() {
  refused "$1" signature cm "$2" verify "$3" --publisher "$4"
}
# same_files A B: the same files with the same bytes, model.sig aside.
same_files() {
  diff -r -x model.sig "$1" "$2" > /dev/null || fail "$2 differs from $1: $(diff -rq -x model.sig "$1" "$2")"
}
# flip_byte FILE OFFSET: changes one bit of FILE at OFFSET, in place.
flip_byte() {
  python3 - "$1" "$2" <<'PY'
import sys
path, at = sys.argv[1], int(sys.argv[2])
with open(path, "r+b") as f:
    f.seek(at)
    byte = f.read(1)
    assert byte, f"{path} is shorter than {at + 1} bytes"
    f.seek(at)
    f.write(bytes([byte[0] ^ 0x01]))
PY
}
# ref_cli_verifies DIR PUB: the reference CLI verifies DIR/model.sig (SHA-256 only).
ref_cli_verifies() {
  local out
  out=$("$MS" verify key "$1" --signature "$1/model.sig" --public_key "$2" 2>&1) \
    || fail "model_signing verify key $1 failed: $out"
  grep -q "Verification succeeded" <<< "$out" || fail "model_signing verify key $1 said: $out"
}

# A small model: a config, a file in a subfolder, an empty file, ~200 KB of random weights.
SRC="$WORK/src"
mkdir -p "$SRC/sub"
echo '{"architectures": ["Tiny"], "hidden_size": 8}' > "$SRC/config.json"
echo 'a file one folder down' > "$SRC/sub/notes.txt"
: > "$SRC/empty.txt"
head -c 200000 /dev/urandom > "$SRC/model.safetensors"

# Keys made with openssl, as a user would: the SEC1 "EC PRIVATE KEY" form `ecparam` writes,
# and the PKCS#8 form `genpkey` writes.
openssl ecparam -name prime256v1 -genkey -noout -out "$WORK/ref.key.pem" 2> /dev/null
openssl ec -in "$WORK/ref.key.pem" -pubout -out "$WORK/ref.pub.pem" 2> /dev/null
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$WORK/other.key.pem" 2> /dev/null
openssl pkey -in "$WORK/other.key.pem" -pubout -out "$WORK/other.pub.pem" 2> /dev/null
grep -q "BEGIN EC PRIVATE KEY" "$WORK/ref.key.pem" || fail "openssl ecparam did not write a SEC1 key"
grep -q "BEGIN PRIVATE KEY" "$WORK/other.key.pem" || fail "openssl genpkey did not write a PKCS#8 key"

# --- a. Commons → reference (BLAKE3) ---------------------------------------------------------
DA="$WORK/a-node"
KEY_JSON=$(cm "$DA" --json key generate alice) || fail "commons key generate alice: $KEY_JSON"
ALICE=$(field public_key <<< "$KEY_JSON")
case "$ALICE" in p256:*) ;; *) fail "key generate: expected a p256:<hex> public key, got $ALICE" ;; esac
[ "$(field algorithm <<< "$KEY_JSON")" != "" ] || fail "key generate: no algorithm in $KEY_JSON"
[ -f "$(field path <<< "$KEY_JSON")" ] || fail "key generate: no key file at the path in $KEY_JSON"
cm "$DA" --json key generate mallory > /dev/null || fail "commons key generate mallory"
cm "$DA" key export-public alice -o "$WORK/alice.pub.pem" || fail "commons key export-public alice -o"
cm "$DA" key export-public mallory -o "$WORK/mallory.pub.pem" || fail "commons key export-public mallory -o"
cm "$DA" key export-public alice | cmp -s - "$WORK/alice.pub.pem" \
  || fail "key export-public alice prints something else than it writes with -o"
grep -q "BEGIN PUBLIC KEY" "$WORK/alice.pub.pem" || fail "export-public did not write an SPKI PEM"

ROOT_A=$(add "$DA" "$SRC" --name lab/signed)
passes "commons sign lab/signed --key alice" cm "$DA" sign lab/signed --key alice
commons_accepts "$DA" "$ROOT_A" "$ALICE"
commons_accepts "$DA" "$ROOT_A" "$WORK/alice.pub.pem"
commons_refuses "commons verify, a key that did not sign" "$DA" "$ROOT_A" "$WORK/mallory.pub.pem"

passes "commons export $ROOT_A" cm "$DA" export "$ROOT_A" "$WORK/a-out"
[ -f "$WORK/a-out/model.sig" ] || fail "commons export wrote no model.sig"
same_files "$SRC" "$WORK/a-out"
passes "the reference verifies what Commons signed" \
  "$PY" "$CHECK" verify-blake3 "$WORK/a-out" "$WORK/a-out/model.sig" "$WORK/alice.pub.pem" --require-hint
echo "ok: a. Commons signs (P-256, BLAKE3), export writes model.sig, model_signing $MODEL_SIGNING_VERSION verifies it"
refused "the reference with another Commons key" "Key mismatch" \
  "$PY" "$CHECK" verify "$WORK/a-out" "$WORK/a-out/model.sig" "$WORK/mallory.pub.pem"
echo "ok: a. the reference refuses Commons' model.sig under another key (key mismatch)"
cp -R "$WORK/a-out" "$WORK/a-flipped"
flip_byte "$WORK/a-flipped/model.safetensors" 100000
# (the message is a Python list's repr: the quotes around the name may come escaped)
refused "the reference on a flipped data byte" "Hash mismatch for .{1,2}model\.safetensors" \
  "$PY" "$CHECK" verify "$WORK/a-flipped" "$WORK/a-flipped/model.sig" "$WORK/alice.pub.pem"
echo "ok: a. the reference refuses the export with one data byte flipped"

# --- b. reference CLI (SHA-256) → Commons ------------------------------------------------------
B="$WORK/b-model"
cp -R "$SRC" "$B"
passes "model_signing sign key" \
  "$MS" sign key "$B" --private_key "$WORK/ref.key.pem" --signature "$B/model.sig"
ref_cli_verifies "$B" "$WORK/ref.pub.pem"
[ "$("$PY" "$CHECK" hash-type "$B/model.sig")" = sha256 ] || fail "the reference CLI did not sign with SHA-256"
DB="$WORK/b-node"
ROOT_B=$(add "$DB" "$B")
# model.sig is not part of the dataset, and a SHA-256 model.sig turns Hub (SHA-256) ids on.
PLAIN_IDS=$(add "$WORK/scratch-node" "$SRC" --hub-ids)
[ "$ROOT_B" = "$PLAIN_IDS" ] \
  || fail "add of the signed folder gave $ROOT_B, not $PLAIN_IDS (the folder without model.sig, --hub-ids)"
commons_accepts "$DB" "$ROOT_B" "$WORK/ref.pub.pem"
echo "ok: b. commons add keeps the reference CLI's SHA-256 model.sig; commons verify --publisher accepts its key"
commons_refuses "commons verify, another publisher" "$DB" "$ROOT_B" "$WORK/other.pub.pem"
echo "ok: b. commons verify --publisher refuses another key, naming the signature"
passes "commons export $ROOT_B" cm "$DB" export "$ROOT_B" "$WORK/b-out"
cmp "$B/model.sig" "$WORK/b-out/model.sig" || fail "export did not write the reference model.sig back byte-identical"
same_files "$B" "$WORK/b-out"
ref_cli_verifies "$WORK/b-out" "$WORK/ref.pub.pem"
echo "ok: b. export writes the model.sig back byte-identical, model_signing verify key accepts the export"

# --- c. reference API (BLAKE3) → Commons -------------------------------------------------------
C="$WORK/c-model"
cp -R "$SRC" "$C"
passes "the reference signs with BLAKE3" "$PY" "$CHECK" sign-blake3 "$C" "$WORK/ref.key.pem" "$C/model.sig"
passes "the reference verifies its BLAKE3 bundle" \
  "$PY" "$CHECK" verify-blake3 "$C" "$C/model.sig" "$WORK/ref.pub.pem" --require-hint
DC="$WORK/c-node"
ROOT_C=$(add "$DC" "$C")
# A BLAKE3 model.sig needs no Hub ids: the dataset is the folder's own.
[ "$ROOT_C" = "$ROOT_A" ] || fail "add of the BLAKE3-signed folder gave $ROOT_C, not $ROOT_A (the same files)"
commons_accepts "$DC" "$ROOT_C" "$WORK/ref.pub.pem"
commons_refuses "commons verify, another publisher (BLAKE3)" "$DC" "$ROOT_C" "$WORK/other.pub.pem"
echo "ok: c. commons add keeps the reference API's BLAKE3 model.sig; verify --publisher accepts its key, refuses another"
passes "commons export $ROOT_C" cm "$DC" export "$ROOT_C" "$WORK/c-out"
cmp "$C/model.sig" "$WORK/c-out/model.sig" || fail "export did not write the BLAKE3 model.sig back byte-identical"
same_files "$C" "$WORK/c-out"
passes "the reference verifies the re-export" \
  "$PY" "$CHECK" verify-blake3 "$WORK/c-out" "$WORK/c-out/model.sig" "$WORK/ref.pub.pem"
echo "ok: c. export writes the BLAKE3 model.sig back byte-identical, the reference verifies the export"

# --- d. model.sig that must not be accepted ----------------------------------------------------
D="$WORK/d-model"
cp -R "$B" "$D"
passes "tamper-signature" "$PY" "$CHECK" tamper-signature "$D/model.sig"
refused "the reference CLI on a changed signature byte" "Verification failed" \
  "$MS" verify key "$D" --signature "$D/model.sig" --public_key "$WORK/ref.pub.pem"
# `add` cannot tell without the key: it may keep the bundle, but no verify may pass.
if OUT=$(cm "$WORK/d-node" --json add "$D" 2> "$WORK/d-add.err"); then
  ROOT_D=$(hash_of <<< "$OUT")
  commons_refuses "commons verify, a changed signature byte" "$WORK/d-node" "$ROOT_D" "$WORK/ref.pub.pem"
  echo "ok: d. commons add keeps a model.sig with a changed signature byte; commons verify --publisher refuses it"
else
  grep -Eqi "signature|model\.sig" "$WORK/d-add.err" \
    || fail "commons add refused the tampered model.sig without saying why: $(cat "$WORK/d-add.err")"
  echo "ok: d. commons add refuses a model.sig with a changed signature byte"
fi
# A model.sig whose file list is not the folder's: `add` fails with a clear error.
D2="$WORK/d-extra"
cp -R "$B" "$D2"
echo 'added after signing' > "$D2/later.txt"
refused "commons add, model.sig of other files" "model\.sig|signature|signed" \
  cm "$WORK/d2-node" add "$D2"
rm "$D2/later.txt" "$D2/sub/notes.txt"
refused "commons add, model.sig listing a missing file" "model\.sig|signature|signed" \
  cm "$WORK/d2-node" add "$D2"
echo "ok: d. commons add refuses a model.sig whose file list differs from the folder (extra, missing file)"
# Same names, other bytes: `add` may keep the bundle, but it must not verify.
D3="$WORK/d-changed"
cp -R "$B" "$D3"
flip_byte "$D3/model.safetensors" 4096
if OUT=$(cm "$WORK/d3-node" --json add "$D3" 2> "$WORK/d3-add.err"); then
  ROOT_D3=$(hash_of <<< "$OUT")
  commons_refuses "commons verify, a model.sig signed for other bytes" "$WORK/d3-node" "$ROOT_D3" "$WORK/ref.pub.pem"
  echo "ok: d. a model.sig signed for other bytes is kept by add but refused by commons verify --publisher"
else
  grep -Eqi "signature|model\.sig|mismatch|digest" "$WORK/d3-add.err" \
    || fail "commons add refused a model.sig for other bytes without saying why: $(cat "$WORK/d3-add.err")"
  echo "ok: d. commons add refuses a model.sig signed for other bytes"
fi

# --- e. one key, both tools ----------------------------------------------------------------------
DE="$WORK/e-node"
passes "commons key import (SEC1)" cm "$DE" key import ref "$WORK/ref.key.pem"
passes "commons key import (PKCS#8)" cm "$DE" key import other "$WORK/other.key.pem"
cm "$DE" key export-public ref -o "$WORK/ref.commons.pub.pem" || fail "key export-public ref"
cm "$DE" key export-public other -o "$WORK/other.commons.pub.pem" || fail "key export-public other"
cmp "$WORK/ref.pub.pem" "$WORK/ref.commons.pub.pem" \
  || fail "the imported SEC1 key's public PEM differs from openssl's"
cmp "$WORK/other.pub.pem" "$WORK/other.commons.pub.pem" \
  || fail "the imported PKCS#8 key's public PEM differs from openssl's"
echo "ok: e. commons key import reads openssl's SEC1 and PKCS#8 keys; export-public matches openssl -pubout"
ROOT_E=$(add "$DE" "$SRC")
passes "commons sign with the imported key" cm "$DE" sign "$ROOT_E" --key ref
commons_accepts "$DE" "$ROOT_E" "$WORK/ref.pub.pem"
passes "commons export $ROOT_E" cm "$DE" export "$ROOT_E" "$WORK/e-out"
same_files "$SRC" "$WORK/e-out"
passes "the reference verifies Commons' signature under the openssl public key" \
  "$PY" "$CHECK" verify-blake3 "$WORK/e-out" "$WORK/e-out/model.sig" "$WORK/ref.pub.pem" --require-hint
[ "$(hint_of "$WORK/e-out/model.sig")" = "$(hint_of "$B/model.sig")" ] \
  || fail "Commons' key hint $(hint_of "$WORK/e-out/model.sig") is not the reference's $(hint_of "$B/model.sig")"
echo "ok: e. the openssl key signs in Commons too: the reference verifies it, with the reference's key hint"

# --- f. two publishers on one dataset ------------------------------------------------------------
passes "commons key import into b-node" cm "$DB" key import other "$WORK/other.key.pem"
passes "commons sign a second time" cm "$DB" sign "$ROOT_B" --key other
commons_accepts "$DB" "$ROOT_B" "$WORK/other.pub.pem"
commons_accepts "$DB" "$ROOT_B" "$WORK/ref.pub.pem"
passes "export --publisher other" cm "$DB" export "$ROOT_B" "$WORK/f-other" --publisher "$WORK/other.pub.pem"
passes "the reference verifies the chosen signature" \
  "$PY" "$CHECK" verify-blake3 "$WORK/f-other" "$WORK/f-other/model.sig" "$WORK/other.pub.pem" --require-hint
passes "export --publisher ref" cm "$DB" export "$ROOT_B" "$WORK/f-ref" --publisher "$WORK/ref.pub.pem"
cmp "$B/model.sig" "$WORK/f-ref/model.sig" || fail "export --publisher did not write the reference's model.sig"
ref_cli_verifies "$WORK/f-ref" "$WORK/ref.pub.pem"
echo "ok: f. two signatures on one dataset: export --publisher writes the chosen publisher's model.sig"

echo "provenance against model_signing $MODEL_SIGNING_VERSION: ok"
