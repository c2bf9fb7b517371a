# `make run` and `make test` work on a fresh machine: they install what they need.
CARGO ?= cargo
BIN_DEBUG := target/debug/portcullis
ifdef CARGO_TARGET_DIR
BIN_DEBUG := $(CARGO_TARGET_DIR)/debug/portcullis
endif

.PHONY: run test deps build lint unit check-configs tls-audit schema fmt

## Build and start proxy + backend on the embedded defaults (Ctrl-C stops).
run:
	@command -v cmake >/dev/null || python3 -m pip install --quiet cmake
	$(CARGO) run --release --bin portcullis -- up

## Everything CI checks.
test: deps lint unit check-configs tls-audit

deps:
	@scripts/install-test-deps.sh

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

unit:
	$(CARGO) test --workspace

check-configs: build
	$(BIN_DEBUG) check-config portcullis.yaml

tls-audit: build
	scripts/tls-audit.sh $(BIN_DEBUG)

build:
	$(CARGO) build --bin portcullis

## Regenerate docs/portcullis.schema.json from the code.
schema: build
	$(BIN_DEBUG) config-schema > docs/portcullis.schema.json

fmt:
	$(CARGO) fmt --all
