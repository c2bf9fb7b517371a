# `make run` and `make test` work on a fresh machine: they install what they need.
CARGO ?= cargo
TARGET_DIR := $(if $(CARGO_TARGET_DIR),$(CARGO_TARGET_DIR),target)
BIN_DEBUG := $(TARGET_DIR)/debug/portcullis

.PHONY: run test deps build lint layout unit check-configs policy regopy schemathesis jwt-hack tls-audit siem browser schema fmt bench bench-proxy bench-proxy-instructions bench-proxy-syscalls bench-proxy-heap web gate gate-selftest observability observability-live scan scan-testssl scan-sslyze scan-observatory scan-wapiti scan-smugglex fuzz-smoke dr-drill screenshots

## Build and start proxy + backend on the embedded defaults (Ctrl-C stops).
run: web
	@command -v cmake >/dev/null || python3 -m pip install --quiet cmake
	$(CARGO) run --release --bin portcullis -- up

## Everything CI checks.
test: deps lint unit check-configs policy gate gate-selftest observability observability-live regopy schemathesis jwt-hack tls-audit siem browser fuzz-smoke

deps:
	@scripts/install-test-deps.sh

lint: layout
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

## Imports point one way: no module cycle inside any crate (docs/architecture.md).
layout:
	python3 scripts/check-module-cycles.py --self-test
	python3 scripts/check-module-cycles.py

unit:
	$(CARGO) test --workspace

# The binary as `cargo test` builds it (dev-dependencies unify some features):
# a plain `cargo build` would compile much of the tree a second time.
build:
	$(CARGO) test --workspace --no-run

check-configs: build
	$(BIN_DEBUG) check-config portcullis.yaml

## Rego unit tests with coverage of the allow/deny matrix (at least 90 %).
policy: build
	$(BIN_DEBUG) policy test policies --coverage --threshold 90

## The shipped policy's decisions agree with a second Rego engine (regopy).
regopy: build
	python3 scripts/regopy-diff.py $(BIN_DEBUG) policies

## API fuzzing through the proxy.
schemathesis: build
	scripts/schemathesis.sh $(BIN_DEBUG) 30

## Every attack token jwt-hack derives from a valid one is refused.
jwt-hack: build
	scripts/jwt-hack.sh $(BIN_DEBUG)

tls-audit: build
	scripts/tls-audit.sh $(BIN_DEBUG)

## Sigma detection rules validate and convert.
siem:
	dashboards/siem/check.sh

## OIDC sign-in in a real browser (Debian's Chromium, playwright-core).
browser: build web
	PORTCULLIS_BIN=$(BIN_DEBUG) node --test tests/browser/

## Screenshots for docs/screenshots/: the monitoring dashboard in Chromium (its browser
## test), and each Grafana dashboard's panel layout drawn with the series a real
## Prometheus answered for every panel query during the live observability test
## (docs/observability.md).
PANEL_SNAPSHOT := $(TARGET_DIR)/panel-snapshot.json
screenshots: build web
	@scripts/observability-deps.sh
	@[ -d tests/browser/node_modules ] || (cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)
	PORTCULLIS_SCREENSHOTS=docs/screenshots PORTCULLIS_BIN=$(BIN_DEBUG) node --test tests/browser/monitoring.test.mjs
	PORTCULLIS_PANEL_SNAPSHOT=$(PANEL_SNAPSHOT) PORTCULLIS_BIN=$(BIN_DEBUG) python3 tests/observability/live_test.py
	node tests/browser/grafana-layout.mjs docs/screenshots $(PANEL_SNAPSHOT)

## The web application: web/ -> web/dist (npm from the lock file; tsc, sink check,
## esbuild, Subresource Integrity hashes in index.html). docs/web.md.
web: web/node_modules/.package-lock.json
	cd web && npm run build

web/node_modules/.package-lock.json: web/package-lock.json web/package.json
	cd web && npm ci --no-audit --no-fund --loglevel=error

## Secure-SDLC gate (docs/security-testing.md): cargo deny, cargo audit, npm audit,
## semgrep, check-config on every shipped config, policy tests with coverage.
gate: build
	@scripts/install-gate-tools.sh
	PORTCULLIS_BIN=$(BIN_DEBUG) scripts/gate.sh

## Every injected defect fails the gate; the clean tree passes (several minutes).
gate-selftest: build
	@scripts/install-gate-tools.sh
	PORTCULLIS_BIN=$(BIN_DEBUG) scripts/gate-selftest.sh

## Prometheus config, rules and their unit tests, Alertmanager routing, dashboard type
## check (docs/observability.md).
observability:
	@scripts/observability-deps.sh
	scripts/observability-check.sh

## Real Prometheus + Alertmanager against the product: every panel query has data and an
## alert reaches a webhook. Not yet in `make test`: the backend's own /metrics and some
## metrics the dashboards use are still missing (docs/observability.md).
observability-live: build
	@scripts/observability-deps.sh
	PORTCULLIS_BIN=$(BIN_DEBUG) python3 tests/observability/live_test.py

## Every fuzz target in fuzz/ (cargo-fuzz, nightly) for FUZZ_SECONDS (10) each, from its
## committed seeds; fails on a crash (the input is left in fuzz/artifacts/<target>/).
## Installs cargo-fuzz if missing. What the runs find goes to the build folder, not to
## fuzz/corpus; the targets' scratch files go to /dev/shm when there is one (the audit
## spool's recovery fsyncs: 30x the runs). README.md "Fuzzing" has longer campaigns.
FUZZ_SECONDS ?= 10
# Past this many files a target's found corpus is merged down to the inputs that add coverage.
FUZZ_CORPUS_FILES ?= 2000
FUZZ_TARGETS := path_normalise jwt_verify csp_report config_load policy_input login_account audit_spool
FUZZ_DIR := $(if $(CARGO_TARGET_DIR),$(CARGO_TARGET_DIR)/fuzz,$(CURDIR)/fuzz/target)
FUZZ_CARGO := nice -n 19 cargo +nightly fuzz
FUZZ_FLAGS := -s none --target-dir $(FUZZ_DIR)
fuzz-smoke:
	@tools=$$(scripts/install-fuzz-tools.sh | tail -n 1); export PATH="$$tools:$$PATH"; \
	cd fuzz && $(if $(FUZZ_BUILD_JOBS),CARGO_BUILD_JOBS=$(FUZZ_BUILD_JOBS)) $(FUZZ_CARGO) build $(FUZZ_FLAGS) || exit 1; \
	failed=""; tmp=$(FUZZ_DIR)/tmp; \
	if [ -d /dev/shm ] && [ -w /dev/shm ]; then tmp=/dev/shm; fi; \
	for t in $(FUZZ_TARGETS); do \
	  found=$(FUZZ_DIR)/corpus/$$t; log=$(FUZZ_DIR)/logs/$$t.log; \
	  mkdir -p "$$found" "$$tmp" "$$(dirname "$$log")"; \
	  scratch=$$(mktemp -d "$$tmp/portcullis-fuzz-$$t.XXXXXX") || exit 1; \
	  if TMPDIR="$$scratch" $(FUZZ_CARGO) run $(FUZZ_FLAGS) $$t "$$found" corpus/$$t -- \
	      -max_total_time=$(FUZZ_SECONDS) -timeout=20 >"$$log" 2>&1; then \
	    echo "fuzz $$t: ok, $$(grep -o 'Done [0-9]* runs in [0-9]* second(s)' "$$log" | tail -n 1)"; \
	  else \
	    echo "fuzz $$t: FAILED ($$log)"; tail -n 40 "$$log"; failed="$$failed $$t"; \
	  fi; \
	  if [ "$$(ls "$$found" | wc -l)" -gt $(FUZZ_CORPUS_FILES) ]; then \
	    rm -rf "$$found.min"; mkdir -p "$$found.min"; \
	    TMPDIR="$$scratch" $(FUZZ_CARGO) run $(FUZZ_FLAGS) $$t "$$found.min" "$$found" -- -merge=1 \
	      >>"$$log" 2>&1 && rm -rf "$$found" && mv "$$found.min" "$$found"; \
	  fi; \
	  rm -rf "$$scratch"; \
	done; \
	if [ -n "$$failed" ]; then echo "fuzz targets failed:$$failed"; exit 1; fi

## External scanners against the running system on loopback, each starting its own
## `portcullis up` (docs/security-testing.md, "External scanners"). Not part of `make test`.
## Each installs its tool (scripts/install-scan-tools.sh, cached in ~/.cache/portcullis-tools)
## and fails on a finding rated high or worse. `make scan` runs all and prints their times.
scan: build web
	scripts/scan-all.sh $(BIN_DEBUG)

## testssl.sh: the `tls-audit` run (scripts/tls-audit.sh), installing testssl.sh if missing.
scan-testssl: build
	scripts/scan-testssl.sh $(BIN_DEBUG)

## sslyze --mozilla_config=intermediate, plus its vulnerability checks.
scan-sslyze: build
	scripts/scan-sslyze.sh $(BIN_DEBUG)

## MDN HTTP Observatory: security headers and HTTP->HTTPS redirect on three pages.
scan-observatory: build web
	scripts/scan-observatory.sh $(BIN_DEBUG)

## wapiti: crawl + OpenAPI operations, signed in as an administrator, time-bounded.
scan-wapiti: build web
	scripts/scan-wapiti.sh $(BIN_DEBUG)

## smugglex: request smuggling / desync checks (built from crates.io on first use).
scan-smugglex: build
	scripts/scan-smugglex.sh $(BIN_DEBUG)

## Regenerate docs/portcullis.schema.json from the code.
schema: build
	$(BIN_DEBUG) config-schema > docs/portcullis.schema.json

## Criterion micro-benchmarks (policy evaluation, JWT verification, audit spool).
bench:
	$(CARGO) bench -p portcullis-authz -p portcullis-proxy -p portcullis-audit

## Portcullis against nginx and the bare upstream, side by side on loopback (bench/proxy/);
## prints the table and adds it to BENCHMARKS.md. BENCH_SECONDS=N per row (10), more knobs
## in bench/proxy/run.py; PORTCULLIS_BIN=PATH measures another build.
bench-proxy:
	@bench/proxy/install-deps.sh
	$(CARGO) build --release --bin portcullis
	PORTCULLIS_BIN=$${PORTCULLIS_BIN:-$(TARGET_DIR)/release/portcullis} python3 bench/proxy/run.py

## User-space instructions per proxied request under callgrind (bench/proxy/instructions.py):
## steady where requests/s on a shared machine are not. Give two builds to compare them:
## make bench-proxy-instructions BINS="old/portcullis new/portcullis".
bench-proxy-instructions:
	@bench/proxy/install-deps.sh
	@if [ -z "$(BINS)" ]; then $(CARGO) build --release --bin portcullis; fi
	python3 bench/proxy/instructions.py $(if $(BINS),$(BINS),$(TARGET_DIR)/release/portcullis)

## System calls per proxied request, Portcullis beside nginx (strace -c); BIN=path to use one binary.
bench-proxy-syscalls:
	@bench/proxy/install-deps.sh
	@if [ -z "$(BIN)" ]; then $(CARGO) build --release --bin portcullis; fi
	python3 bench/proxy/syscalls.py $(if $(BIN),$(BIN),$(TARGET_DIR)/release/portcullis)

## Heap bytes per idle keep-alive connection by allocation site (massif; bench/proxy/heap.py).
## massif sees only the system allocator: this builds without mimalloc, linked by GNU ld
## (valgrind cannot read rust-lld's symbols), in a target directory of its own.
HEAP_TARGET_DIR ?= $(TARGET_DIR)/heap
bench-proxy-heap:
	@bench/proxy/install-deps.sh
	CARGO_TARGET_DIR=$(HEAP_TARGET_DIR) RUSTFLAGS=-Clink-arg=-fuse-ld=bfd $(CARGO) build --release --bin portcullis --no-default-features
	python3 bench/proxy/heap.py $(HEAP_TARGET_DIR)/release/portcullis

fmt:
	$(CARGO) fmt --all

## Disaster-recovery drill on SQLite and PostgreSQL: back up while writing, destroy,
## restore, compare; prints the measured RTO (docs/runbooks/disaster-recovery.md).
dr-drill:
	$(CARGO) test --workspace --test dr_drill -- --nocapture --test-threads 1
