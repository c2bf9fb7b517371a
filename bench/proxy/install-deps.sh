#!/usr/bin/env bash
# Installs what `make bench-proxy` needs on a fresh Debian 12 machine, skipping
# whatever is already there. Idempotent.
#   nginx (static upstream and the TLS reverse proxy it is compared with), wrk
#   (http/1.1 load), h2load from nghttp2-client (h2 load), openssl (throwaway
#   certificate), valgrind (callgrind, for `make bench-proxy-instructions`), strace (for
#   `make bench-proxy-syscalls`), and oha (crates.io; open-loop constant-rate load for
#   the added-latency rows), built once into $BENCH_TOOLS (default ~/.cache/bench-tools;
#   a few minutes at nice 19; BENCH_OHA_JOBS=N limits the build jobs; BENCH_SKIP_OHA=1
#   skips it and the driver leaves those rows out).
set -euo pipefail
tools=${BENCH_TOOLS:-$HOME/.cache/bench-tools}
need_apt=()
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need_apt+=(nginx)
command -v wrk >/dev/null || need_apt+=(wrk)
command -v h2load >/dev/null || need_apt+=(nghttp2-client)
command -v openssl >/dev/null || need_apt+=(openssl)
command -v valgrind >/dev/null || need_apt+=(valgrind)  # bench-proxy-instructions
command -v strace >/dev/null || need_apt+=(strace)  # bench-proxy-syscalls
if [ "${#need_apt[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then sudo=; else sudo=sudo; fi
  $sudo apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  # The Debian package starts a system nginx on port 80; the benchmark runs its own.
  if [[ " ${need_apt[*]} " == *" nginx "* ]] && command -v systemctl >/dev/null; then
    $sudo systemctl disable --now nginx >/dev/null 2>&1 || true
  fi
fi
if [ -z "${BENCH_SKIP_OHA:-}" ] && ! command -v oha >/dev/null && [ ! -x "$tools/bin/oha" ]; then
  echo "bench-proxy: installing oha (crates.io) into $tools (once)" >&2
  command -v cmake >/dev/null || python3 -m pip install --quiet cmake
  CARGO_INSTALL_ROOT="$tools" nice -n 19 "${CARGO:-cargo}" install --locked --quiet ${BENCH_OHA_JOBS:+-j "$BENCH_OHA_JOBS"} oha \
    || echo "bench-proxy: oha did not install; the open-loop rows will be skipped" >&2
fi
