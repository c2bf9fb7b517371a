#!/usr/bin/env bash
# Installs what `make fuzz-smoke` needs, pinned, into a cache outside the clone
# (${PORTCULLIS_TOOLS:-$HOME/.cache/portcullis-tools}, the one scripts/install-gate-tools.sh
# uses), so a cold CI machine builds it once and later runs find it. Idempotent: a tool
# already there at the pinned version is left alone. Prints the tools' bin directory last.
#
#   cargo-fuzz  crates.io, `cargo install --locked` (~2 min at one job)
#   nightly     the fuzz targets build with `cargo +nightly` (sanitizer-coverage flags):
#               the installed nightly toolchain is used as it is; only when there is none
#               is rustup asked for one (which needs the Rust distribution server)
# FUZZ_TOOLS_JOBS=N builds cargo-fuzz with N jobs (default 1: CI builds the project next
# to it).
set -euo pipefail

CARGO_FUZZ_VERSION=0.13.2

TOOLS="${PORTCULLIS_TOOLS:-$HOME/.cache/portcullis-tools}"
BIN="$TOOLS/bin"
mkdir -p "$BIN"

say() { printf 'install-fuzz-tools: %s\n' "$*" >&2; }

# --- nightly toolchain ---------------------------------------------------------------------
if ! cargo +nightly --version >/dev/null 2>&1; then
  say "no nightly toolchain: rustup toolchain install nightly (minimal profile)"
  rustup toolchain install nightly --profile minimal
fi

# --- cargo-fuzz ----------------------------------------------------------------------------
# `cargo-fuzz --version` prints `cargo-fuzz 0.13.2`.
have=$("$BIN/cargo-fuzz" --version 2>/dev/null | awk '{print $2}' || true)
if [ "$have" != "$CARGO_FUZZ_VERSION" ]; then
  say "cargo-fuzz $CARGO_FUZZ_VERSION (crates.io) into $BIN${have:+ (found $have)}"
  # Built with the stable toolchain, in a target directory of its own inside the cache,
  # with one job and low priority so a build running next to it is not starved.
  CARGO_TARGET_DIR="$TOOLS/build-fuzz" nice -n 19 cargo install --locked --force --quiet \
    -j "${FUZZ_TOOLS_JOBS:-1}" --root "$TOOLS" --version "$CARGO_FUZZ_VERSION" cargo-fuzz
fi
# The build directory only serves the next upgrade.
rm -rf "$TOOLS/build-fuzz"

echo "$BIN"
