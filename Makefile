# groupshare — see README.md. `make` builds tracker.out and client.out.
SHELL := /bin/bash
CARGO ?= cargo
INFO  ?= tracker_info.txt
KEY   ?= .cluster.key

.PHONY: all build test demo bench run-tracker1 run-tracker2 run-client clean fmt lint

all: build

build:
	$(CARGO) build --release --bins
	cp target/release/tracker tracker.out
	cp target/release/client client.out

# The cluster key both trackers prove themselves with; made once, never committed.
$(KEY):
	@umask 077; head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > $(KEY)
	@echo "made cluster key $(KEY)"

# Each tracker first writes its key's fingerprint after its address in $(INFO) (made in its
# data directory on first start), so clients check they reach the real tracker.
run-tracker1: build $(KEY)
	./tracker.out $(INFO) 1 --write-pin
	./tracker.out $(INFO) 1 --cluster-key $(KEY)

run-tracker2: build $(KEY)
	./tracker.out $(INFO) 2 --write-pin
	./tracker.out $(INFO) 2 --cluster-key $(KEY)

run-client: build
	./client.out 127.0.0.1:0 $(INFO)

# Every test; the last line sums up every test binary's result ("N passed, N failed").
test:
	$(CARGO) build --bins
	@set -o pipefail; status=0; $(CARGO) test -- --test-threads=2 2>&1 | tee target/test.log || status=$$?; \
	  awk '/^test result:/ { p += $$4; f += $$6 } END { printf "%d passed, %d failed\n", p, f }' target/test.log; \
	  exit $$status

demo: build
	$(CARGO) run --release --quiet --bin demo

bench: build
	$(CARGO) run --release --quiet --bin bench

fmt:
	$(CARGO) fmt --all

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

clean:
	$(CARGO) clean
	rm -f tracker.out client.out
