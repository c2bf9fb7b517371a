#!/usr/bin/env bash
# Installs the tools scripts/gate.sh needs, pinned, into a cache outside the clone
# (${PORTCULLIS_TOOLS:-$HOME/.cache/portcullis-tools}), so a cold CI machine builds them
# once and later runs find them. Idempotent: a tool already there at the pinned version
# is left alone. Prints the tools' bin directory last (gate.sh puts it on PATH).
#
#   semgrep     PyPI, in its own virtualenv (its pinned dependencies would otherwise
#               downgrade packages other test tools need, e.g. jsonschema)
#   cargo-deny  crates.io, `cargo install --locked` (~2 min to build)
#   cargo-audit crates.io, `cargo install --locked` (~5 min idle, 20+ min on a busy machine)
# GATE_TOOLS_JOBS=N builds with N jobs (default 1: CI builds the project next to it).
set -euo pipefail

SEMGREP_VERSION=1.187.0
CARGO_DENY_VERSION=0.20.2
CARGO_AUDIT_VERSION=0.22.2

TOOLS="${PORTCULLIS_TOOLS:-$HOME/.cache/portcullis-tools}"
BIN="$TOOLS/bin"
mkdir -p "$BIN"

say() { printf 'install-gate-tools: %s\n' "$*" >&2; }

# --- semgrep -----------------------------------------------------------------------------
venv="$TOOLS/semgrep-venv"
# (the version from the package metadata: `semgrep --version` may wait on the network)
have_semgrep=""
if [ -x "$venv/bin/semgrep" ]; then
  have_semgrep=$(cd "$venv" && ls -d lib/python3*/site-packages/semgrep-*.dist-info 2>/dev/null \
    | sed -E 's|.*/semgrep-([^/]+)\.dist-info$|\1|' | head -n 1)
fi
if [ "$have_semgrep" != "$SEMGREP_VERSION" ]; then
  say "semgrep $SEMGREP_VERSION (PyPI) into $venv"
  rm -rf "$venv"
  if ! python3 -m venv "$venv" 2>/dev/null; then
    # Debian's system Python keeps venv in a package of its own.
    if [ "$(id -u)" = 0 ]; then sudo=; else sudo=sudo; fi
    $sudo apt-get update -qq
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
    rm -rf "$venv"; python3 -m venv "$venv"
  fi
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "semgrep==$SEMGREP_VERSION"
fi
ln -sf "$venv/bin/semgrep" "$BIN/semgrep"

# --- cargo-deny, cargo-audit ---------------------------------------------------------------
# Built in a target directory of their own inside the cache (not the project's), with one
# job and low priority so a build running next to it is not starved.
cargo_tool() { # crate version binary
  local crate=$1 version=$2 bin=$3 have
  have=$("$BIN/$bin" --version 2>/dev/null | awk '{print $2}' || true)
  if [ "$have" = "$version" ]; then
    return
  fi
  say "$crate $version (crates.io) into $BIN${have:+ (found $have)}"
  CARGO_TARGET_DIR="$TOOLS/build" nice -n 19 cargo install --locked --force --quiet -j "${GATE_TOOLS_JOBS:-1}" \
    --root "$TOOLS" --version "$version" "$crate"
}
cargo_tool cargo-deny "$CARGO_DENY_VERSION" cargo-deny
cargo_tool cargo-audit "$CARGO_AUDIT_VERSION" cargo-audit
# The build directory only serves the next upgrade; it is large.
if [ -d "$TOOLS/build" ] && [ -z "${GATE_TOOLS_KEEP_BUILD:-}" ]; then
  rm -rf "$TOOLS/build"
fi

echo "$BIN"
