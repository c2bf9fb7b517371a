# `make run` and `make test` work on a fresh machine: they install what they need.
CARGO ?= cargo
TARGET_DIR := $(if $(CARGO_TARGET_DIR),$(CARGO_TARGET_DIR),target)
BIN_DEBUG := $(TARGET_DIR)/debug/portcullis

.PHONY: run test deps build lint layout unit check-configs policy regopy schemathesis jwt-hack tls-audit siem browser schema fmt bench bench-proxy web gate gate-selftest observability observability-live

## Build and start proxy + backend on the embedded defaults (Ctrl-C stops).
run: web
	@command -v cmake >/dev/null || python3 -m pip install --quiet cmake
	$(CARGO) run --release --bin portcullis -- up

## Everything CI checks.
test: deps lint unit check-configs policy gate observability regopy schemathesis jwt-hack tls-audit siem browser

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
	@if [ -x dashboards/siem/check.sh ]; then dashboards/siem/check.sh; else echo "no SIEM rules yet"; fi

## OIDC sign-in in a real browser (Debian's Chromium, playwright-core).
browser: build web
	PORTCULLIS_BIN=$(BIN_DEBUG) node --test tests/browser/

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

fmt:
	$(CARGO) fmt --all
