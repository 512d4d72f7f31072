# Commons: the two commands a fresh machine needs are `make demo` and `make test`.
# Both install what they need first (libclang for RocksDB's bindings).
#
# Every cargo command here uses the release profile and the whole workspace with all
# targets, so RocksDB's C++ (~25 minutes on two cores) is compiled once and shared by the
# binary, the tests and clippy: building a subset (`-p`, no dev-dependencies) can unify
# build-dependency features differently and recompile it. The build output lives outside
# the work tree so it survives fresh clones.

export CARGO_TARGET_DIR ?= $(HOME)/.cache/commons/target
CARGO ?= cargo
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test lint fmt deps python-deps build bench fetch-bench transport-bench dht-bench name-bench swarm-lab swarm-lab-flash nat-lab scale-sim scale-sim-dht bundle-bench cost-bench gateway-bench load-lab hub-bench crash-soak fuzz check-layering check-cycles

## demo: build `commons`, then add a sample dataset, list, export and verify it, fetch it
## over QUIC by ticket and by hash, and read it through the HTTP gateway (installs curl)
demo: deps build
	command -v curl >/dev/null || { $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq curl; }
	bash scripts/demo.sh "$(CARGO_TARGET_DIR)/release/commons"

## test: every unit and end-to-end test (release profile), then the official huggingface_hub
## client (installed from PyPI into a virtualenv under ~/.cache/commons) against the gateway,
## then OpenSSF Model Signing's reference library (model-signing, same virtualenv) against
## Commons' signatures both ways, then the systemd unit (systemd-analyze verify, and the paths its sandbox allows).
## It builds the workspace first: the scripts run binaries no test target builds (hub-origin).
test: deps python-deps check-layering check-cycles build
	$(CARGO) test --release --workspace --all-targets --locked
	bash scripts/hf_test.sh "$(CARGO_TARGET_DIR)/release/commons"
	command -v openssl >/dev/null || { $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq openssl; }
	bash scripts/provenance_test.sh "$(CARGO_TARGET_DIR)/release/commons"
	command -v systemd-analyze >/dev/null || { $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq systemd; }
	bash scripts/check_unit.sh "$(CARGO_TARGET_DIR)/release/commons"

## lint: formatting, clippy (clippy.toml bans unbounded channels), no import cycles
lint: deps check-cycles
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --workspace --all-targets --locked -- -D warnings

fmt:
	$(CARGO) fmt --all

build: deps
	$(CARGO) build --release --workspace --all-targets --locked

## bench: import benchmark (1 GiB and 4 GiB files) against cp + b3sum
bench: deps build
	command -v b3sum >/dev/null || $(CARGO) install --locked b3sum
	"$(CARGO_TARGET_DIR)/release/import-bench" --commons "$(CARGO_TARGET_DIR)/release/commons"

## bundle-bench: pack / unpack of a 1 GiB dataset against tar cf / tar xf + b3sum -c,
## peak RSS, and the cost of resuming after a cut at 50 %
bundle-bench: deps build
	command -v b3sum >/dev/null || $(CARGO) install --locked b3sum
	"$(CARGO_TARGET_DIR)/release/bundle-bench" --commons "$(CARGO_TARGET_DIR)/release/commons"

## dht-bench: 20 and 50 DHT nodes on loopback: provider lookups, announcing 10,000 roots
dht-bench: deps build
	"$(CARGO_TARGET_DIR)/release/dht-bench"

## name-bench: 50 DHT nodes on loopback: signed-name resolution (cold, warm, a new version)
## against provider lookups; signing and verifying a 10,000-file dataset against parsing its manifest
name-bench: deps build
	"$(CARGO_TARGET_DIR)/release/name-bench"

## swarm-lab: network namespaces (root): 4 seeders at 100 Mbit/s each, 1 leecher, 1 GiB; also
## aria2c (BitTorrent) on the same links; writes target/swarm-lab/swarm-lab.svg
swarm-lab: deps build
	command -v aria2c >/dev/null && command -v mktorrent >/dev/null && command -v opentracker >/dev/null || { $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq aria2 mktorrent opentracker; }
	$(SUDO) "$(CARGO_TARGET_DIR)/release/swarm-lab" --commons "$(CARGO_TARGET_DIR)/release/commons"

## swarm-lab-flash: network namespaces (root): flash crowd, 1 seeder + 10 leechers vs nginx, 256 MiB;
## writes target/swarm-lab/swarm-lab-flash.svg
swarm-lab-flash: deps build
	command -v nginx >/dev/null || { $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq nginx curl; }
	$(SUDO) "$(CARGO_TARGET_DIR)/release/swarm-lab" --commons "$(CARGO_TARGET_DIR)/release/commons" --flash --size-mib 256

## nat-lab: network namespaces (root): relays, cone and symmetric NATs, a site without UDP;
## fetches through relays, hole punches (20 trials per pair of NAT kinds) (installs nftables)
nat-lab: deps build
	command -v nft >/dev/null || { $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq nftables; }
	$(SUDO) "$(CARGO_TARGET_DIR)/release/nat-lab" --commons "$(CARGO_TARGET_DIR)/release/commons"

## fetch-bench: 1 GiB over loopback: commons get vs sendme and nginx → curl
fetch-bench: deps build
	command -v sendme >/dev/null || $(CARGO) install --locked sendme
	command -v nginx >/dev/null || { $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq nginx curl; }
	"$(CARGO_TARGET_DIR)/release/fetch-bench" --commons "$(CARGO_TARGET_DIR)/release/commons"

## transport-bench: 1 GiB on one stream, nothing stored or verified: the libp2p host vs the
## bulk-data endpoint (four tunings) vs nginx → curl
transport-bench: deps build
	command -v nginx >/dev/null || { $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq nginx curl; }
	"$(CARGO_TARGET_DIR)/release/transport-bench"

## scale-sim: the node's swarm state machines for many nodes in virtual time (no root, no
## network): the swarm lab's scenarios against their measured times, then a flash crowd of
## 10, 100, 1,000 and 10,000 mirrors fed by one seeder with a 100 GiB release, then 1,000,
## 10,000 and 100,000 mirrors with a 10 GiB one, the model on two threads (`--threads`;
## about 15 minutes: 2 for 10,000 mirrors of 100 GiB, 11 for 100,000 of 10 GiB, which peak
## at 7 GiB of RSS; charts in target/scale-sim/ and target/scale-sim/10-gib/)
scale-sim: deps build
	"$(CARGO_TARGET_DIR)/release/scale-sim" --validate --seeds 8
	"$(CARGO_TARGET_DIR)/release/scale-sim"
	"$(CARGO_TARGET_DIR)/release/scale-sim" --mirrors 1000,10000,100000 --size-mib 10240 \
		--out-dir target/scale-sim/10-gib

## scale-sim-dht: the node's Kademlia lookups for 1,000 to 100,000 DHT servers in virtual
## time, with and without churn, checked against dht-bench's walks; records per node
## (about 5 minutes; charts in target/scale-sim/)
scale-sim-dht: deps build
	"$(CARGO_TARGET_DIR)/release/scale-sim" --dht

## cost-bench: CPU seconds per GiB (user, system) of a seeder and a fetcher over loopback,
## 1 GiB and 10 GiB, against nginx over TLS and plain nginx to curl in the same run; the
## gateway against nginx; add against cp + sync + b3sum; perf profiles in simulations/profiles
cost-bench: deps build
	command -v b3sum >/dev/null || $(CARGO) install --locked b3sum
	command -v nginx >/dev/null && command -v perf >/dev/null || { $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq nginx curl openssl linux-perf; }
	"$(CARGO_TARGET_DIR)/release/cost-bench" --commons "$(CARGO_TARGET_DIR)/release/commons" --perf simulations/profiles

## gateway-bench: 1 GiB from the HTTP gateway vs nginx, and RSS under 50 range clients
gateway-bench: deps build
	command -v nginx >/dev/null || { $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq nginx curl; }
	"$(CARGO_TARGET_DIR)/release/gateway-bench" --commons "$(CARGO_TARGET_DIR)/release/commons"

## load-lab: one seeder (64 MiB) under 200 fetchers, 1,000 idle streams and 300 slow gateway
## clients at once: its peak RSS, honest fetchers, and two `get`s and a `curl` with and without
## the load; then the same probes under 200 DHT lookers. Prints the tables; exits non-zero when
## the RSS passes the lab's cap, a fetcher never completes or a probe fails (installs curl)
load-lab: deps build
	command -v curl >/dev/null || { $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq curl; }
	"$(CARGO_TARGET_DIR)/release/load-lab" --commons "$(CARGO_TARGET_DIR)/release/commons"

## hub-bench: a 1 GiB Hub repository on a loopback test origin: `commons add hf://` vs curl of
## the same files, a second mirror's bytes from the origin; then network namespaces (root):
## 10 clients through 2 mirrors vs one pull-through cache, origin uplink at 100 Mbit/s
hub-bench: deps build
	command -v curl >/dev/null || { $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq curl; }
	$(SUDO) "$(CARGO_TARGET_DIR)/release/hub-bench" --commons "$(CARGO_TARGET_DIR)/release/commons" --lab --json-out hub-bench.json

## crash-soak: SIGKILLs at random moments of add, get (3 seeders), rm/gc and a mirror following
## a signed name, each followed by verify, then the operation completes; the re-sent bytes of 20
## kills of a 256 MiB get (packets the seeder sent, counted by nftables); ENOSPC (a tmpfs) and
## EIO (ext4 shut down) during add and get (root).
## Writes crash-soak.md; CRASH_SOAK_ARGS=--quick for a smoke run (~1 min)
crash-soak: deps build
	command -v mkfs.ext4 >/dev/null && command -v nft >/dev/null || { $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq e2fsprogs nftables; }
	$(SUDO) "$(CARGO_TARGET_DIR)/release/crash-soak" --commons "$(CARGO_TARGET_DIR)/release/commons" $(CRASH_SOAK_ARGS)

## fuzz: every fuzz target (fuzz/fuzz_targets, libFuzzer on the stable toolchain, installs
## cargo-fuzz) for FUZZ_SECONDS each with the value profile; new inputs are added to
## fuzz/corpus (which `make test` replays), crashes land in fuzz/artifacts
FUZZ_SECONDS ?= 60
fuzz: deps
	command -v cargo-fuzz >/dev/null || $(CARGO) install --locked cargo-fuzz
	cd fuzz && for t in $$($(CARGO) fuzz list); do \
	  echo "== $$t"; \
	  CARGO_TARGET_DIR="$(HOME)/.cache/commons/fuzz-target" $(CARGO) fuzz run --sanitizer none -O $$t corpus/$$t -- \
	    -use_value_profile=1 -max_total_time=$(FUZZ_SECONDS) -max_len=8192 || exit 1; \
	done

## check-layering: protocol/ must stay sans-IO (no tokio, libp2p, quinn or rocksdb)
check-layering:
	@if $(CARGO) tree -p commons-protocol -e normal --prefix none --locked | grep -E '^(tokio|libp2p|quinn|rocksdb|librocksdb-sys) '; then \
		echo "protocol/ must not depend on I/O crates"; exit 1; fi

## check-cycles: no import cycles between modules of a crate (scripts/check_module_cycles.py)
check-cycles:
	@python3 scripts/check_module_cycles.py

## python-deps: python3 with venv and pip, for the huggingface_hub test
python-deps:
	@if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then \
		echo "installing python3-venv (the Hugging Face client test runs in a virtualenv)"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq python3 python3-venv; \
	fi

## deps: system packages the build needs (RocksDB's bindings need libclang)
deps:
	@if ! dpkg -s libclang-dev >/dev/null 2>&1; then \
		echo "installing libclang-dev (needed to build RocksDB's Rust bindings)"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq libclang-dev; \
	fi
