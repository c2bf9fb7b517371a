#!/usr/bin/env bash
# Installs the external scanners of `make scan` (docs/security-testing.md), pinned, into
# a cache outside the clone (${PORTCULLIS_TOOLS:-$HOME/.cache/portcullis-tools}), the
# same one scripts/install-gate-tools.sh uses. Idempotent and quiet: a tool already
# there at the pinned version is left alone. Names the tools to install (default: all).
#
#   testssl      Debian package testssl.sh (apt; also in install-test-deps.sh)
#   sslyze       PyPI, in its own virtualenv
#   wapiti       PyPI wapiti3, in its own virtualenv (it pins many libraries)
#   observatory  npm @mdn/mdn-http-observatory, `npm install --ignore-scripts` into the
#                cache: its install scripts download Mozilla's intermediate-CA bundle and
#                Chromium's HSTS preload list from hosts other than the registry. The
#                scan needs neither (the CA is ours, localhost is not preloaded), so an
#                empty preload list is written in their place.
#   smugglex     crates.io, `cargo install --locked`, one job at nice 19 (a few minutes)
# SCAN_TOOLS_JOBS=N builds smugglex with N jobs (default 1).
set -euo pipefail

SSLYZE_VERSION=6.3.1
WAPITI_VERSION=3.2.3
OBSERVATORY_VERSION=1.4.8
SMUGGLEX_VERSION=0.4.0

TOOLS="${PORTCULLIS_TOOLS:-$HOME/.cache/portcullis-tools}"
BIN="$TOOLS/bin"
mkdir -p "$BIN"

say() { printf 'install-scan-tools: %s\n' "$*" >&2; }
if [ "$(id -u)" = 0 ]; then sudo=; else sudo=sudo; fi
apt_install() {
  $sudo apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# A PyPI tool in a virtualenv of its own: pip_tool NAME DIST VERSION ENTRY-POINT
pip_tool() {
  local name=$1 dist=$2 version=$3 entry=$4 have=''
  local venv="$TOOLS/$name-venv"
  if [ -x "$venv/bin/$entry" ]; then
    have=$("$venv/bin/python" -c 'import sys
from importlib.metadata import version
print(version(sys.argv[1]))' "$dist" 2>/dev/null || true)
  fi
  if [ "$have" != "$version" ]; then
    say "$dist $version (PyPI) into $venv${have:+ (found $have)}"
    rm -rf "$venv"
    if ! python3 -m venv "$venv" 2>/dev/null; then
      apt_install python3-venv
      rm -rf "$venv"; python3 -m venv "$venv"
    fi
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$dist==$version"
  fi
  ln -sf "$venv/bin/$entry" "$BIN/$entry"
}

install_testssl() {
  command -v testssl >/dev/null || { say "testssl.sh (Debian)"; apt_install testssl.sh; }
}

install_sslyze() { pip_tool sslyze sslyze "$SSLYZE_VERSION" sslyze; }

install_wapiti() { pip_tool wapiti wapiti3 "$WAPITI_VERSION" wapiti; }

install_observatory() {
  local dir="$TOOLS/observatory" pkg have=''
  pkg="$dir/node_modules/@mdn/mdn-http-observatory"
  command -v node >/dev/null || { say "node (Debian)"; apt_install nodejs npm; }
  if [ -f "$pkg/package.json" ]; then
    have=$(node -p 'require(process.argv[1]).version' "$pkg/package.json" 2>/dev/null || true)
  fi
  if [ "$have" != "$OBSERVATORY_VERSION" ]; then
    say "@mdn/mdn-http-observatory $OBSERVATORY_VERSION (npm) into $dir${have:+ (found $have)}"
    rm -rf "$dir"; mkdir -p "$dir"
    (cd "$dir" && npm install --no-audit --no-fund --loglevel=error --ignore-scripts \
      "@mdn/mdn-http-observatory@$OBSERVATORY_VERSION" >/dev/null)
  fi
  [ -s "$pkg/conf/hsts-preload.json" ] || echo '{}' > "$pkg/conf/hsts-preload.json"
}

install_smugglex() {
  local have
  have=$("$BIN/smugglex" --version 2>/dev/null | awk '{print $2}' || true)
  if [ "$have" = "$SMUGGLEX_VERSION" ]; then
    return
  fi
  command -v cargo >/dev/null || { echo "install-scan-tools: smugglex needs cargo (a Rust toolchain)" >&2; exit 1; }
  say "smugglex $SMUGGLEX_VERSION (crates.io) into $BIN${have:+ (found $have)}: a few minutes"
  CARGO_TARGET_DIR="$TOOLS/build-smugglex" nice -n 19 cargo install --locked --force --quiet \
    -j "${SCAN_TOOLS_JOBS:-1}" --root "$TOOLS" --version "$SMUGGLEX_VERSION" smugglex
  rm -rf "$TOOLS/build-smugglex"
}

tools=("$@")
[ "${#tools[@]}" -gt 0 ] || tools=(testssl sslyze wapiti observatory smugglex)
for tool in "${tools[@]}"; do
  case $tool in
    testssl|sslyze|wapiti|observatory|smugglex) "install_$tool" ;;
    *) echo "install-scan-tools: unknown tool $tool" >&2; exit 2 ;;
  esac
done
echo "$BIN"
