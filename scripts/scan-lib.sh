# shellcheck shell=bash
# Shared by the external scanners (scripts/scan-*.sh, `make scan`): start the real
# system — `portcullis --config X up` — on free loopback ports, in a throw-away folder,
# with a throw-away CA and a leaf for localhost/127.0.0.1 that the scanners are told to
# trust, so that what they report is about Portcullis and not about an unknown issuer.
# Sourced, not run. Every scan script:
#
#   . "$(dirname "$0")/scan-lib.sh"
#   scan_init "$1"                       # binary path; work folder; trap that stops the server
#   scan_up [--http] [--open-rate-limits] [--user NAME ROLES]
#   ... run the scanner against https://localhost:$SCAN_HTTPS ...
#
# After scan_up: SCAN_HTTPS, SCAN_HTTP (empty without --http), SCAN_ADMIN (ports),
# SCAN_CA (the CA to trust, PEM), SCAN_WORK (the folder, removed on exit),
# SCAN_ROOT (the clone) and, with --user, SCAN_TOKEN (an access token of that user,
# signed in through the proxy as an API client, valid for an hour).
# Nothing secret goes into the environment of the binary: the user's password is
# generated here, handed to `portcullis user import` in a file that is removed at once,
# and used once for the sign-in.

SCAN_PID=
SCAN_WORK=
# Stops the server with SIGTERM, as an operator would. It must be gone within the drain
# grace (10 s) and a few seconds more; if not, that is a defect of its own: it is
# reported with what it logged after the signal, killed, and the scan fails. (Before
# 10bf04a a shutdown could hang spinning on `Accept() failed ... Tokio context ... being
# shutdown`, writing gigabytes of log: it must never be waited for without a bound.)
scan_cleanup() {
  local status=$? stopped=''
  if [ -n "$SCAN_PID" ] && kill -0 "$SCAN_PID" 2>/dev/null; then
    local term_at i; term_at=$(date -u +%H:%M:%S)
    kill -TERM "$SCAN_PID" 2>/dev/null || true
    for i in $(seq 200); do
      kill -0 "$SCAN_PID" 2>/dev/null || { stopped=1; break; }
      sleep 0.1
    done
    [ -z "$stopped" ] || scan_say "portcullis stopped within $(( (i + 9) / 10 )) s of SIGTERM"
    if [ -z "$stopped" ]; then
      kill -STOP "$SCAN_PID" 2>/dev/null || true
      local log="$SCAN_WORK/portcullis.log"
      echo "DEFECT: portcullis (pid $SCAN_PID) did not exit within 20 s of SIGTERM (sent $term_at UTC);" \
        "$(grep -c 'Accept() failed' "$log" 2>/dev/null || echo 0) 'Accept() failed' log lines," \
        "log $(du -h "$log" 2>/dev/null | cut -f1). Killed. What it logged after SIGTERM" \
        "(the first repeated line once, then the others):" >&2
      grep -m1 'Accept() failed' "$log" | cut -c1-300 >&2
      grep -v 'Accept() failed\|reusable stream\|portcullis::access' "$log" | grep -A30 'SIGTERM' | cut -c1-300 >&2
      kill -KILL "$SCAN_PID" 2>/dev/null || true
      status=1
    fi
    wait "$SCAN_PID" 2>/dev/null || true
  fi
  if [ -n "$SCAN_WORK" ] && [ -z "${SCAN_KEEP:-}" ]; then rm -rf "$SCAN_WORK"; fi
  if [ -n "${SCAN_KEEP:-}" ]; then echo "scan: kept $SCAN_WORK" >&2; fi
  exit "$status"
}

scan_say() { printf '%s: %s\n' "$(basename "$0" .sh)" "$*" >&2; }

# scan_init BIN: absolute binary path, the clone's root, a fresh work folder (cwd).
scan_init() {
  SCAN_BIN=$(realpath "${1:-target/debug/portcullis}")
  if [ ! -x "$SCAN_BIN" ]; then
    echo "no portcullis binary at $SCAN_BIN (make build, or pass its path)" >&2
    exit 2
  fi
  SCAN_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  SCAN_WORK=$(mktemp -d)
  trap scan_cleanup EXIT
  trap 'exit 130' INT TERM
  cd "$SCAN_WORK" || exit 1
}

scan_free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# A CA and a leaf for localhost/127.0.0.1 signed by it (P-256, as tls-audit.sh does).
scan_make_ca() {
  # (keyUsage and basicConstraints on the CA too: sslyze's chain check, like a browser's,
  # refuses a CA certificate without them.)
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem \
    -days 400 -subj "/CN=Portcullis scan CA" -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout server.key -out server.csr \
    -subj "/CN=localhost" 2>/dev/null
  cat > ext.cnf <<EXT
subjectAltName=DNS:localhost,IP:127.0.0.1
extendedKeyUsage=serverAuth
keyUsage=digitalSignature
basicConstraints=critical,CA:FALSE
EXT
  openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem \
    -days 200 -extfile ext.cnf 2>/dev/null
  rm -f ca.key server.csr ext.cnf
  SCAN_CA=$SCAN_WORK/ca.pem
}

# scan_up [--http] [--open-rate-limits] [--user NAME ROLES]
#   --http              also the plain-HTTP listener (308 to HTTPS)
#   --open-rate-limits  per-address limit raised to 100000/period, so a scanner's
#                       volume is not answered by 429s (which would hide findings)
#   --user NAME ROLES   import NAME with ROLES (`;`-separated) and sign it in, after an
#                       employee `bystander` (another user's data to reach for).
#                       Scanners fill ids in paths with 1 (DELETE /api/employees/1 ...):
#                       that is the bootstrap administrator `admin`, never NAME.
scan_up() {
  local with_http='' open_limits='' user='' roles=''
  while [ $# -gt 0 ]; do
    case $1 in
      --http) with_http=1 ;;
      --open-rate-limits) open_limits=1 ;;
      --user) user=$2; roles=$3; shift 2 ;;
      *) echo "scan_up: unknown option $1" >&2; return 2 ;;
    esac
    shift
  done
  scan_make_ca
  SCAN_HTTPS=$(scan_free_port); SCAN_ADMIN=$(scan_free_port); local backend; backend=$(scan_free_port)
  SCAN_HTTP=''
  local http_listen=null
  if [ -n "$with_http" ]; then SCAN_HTTP=$(scan_free_port); http_listen="\"127.0.0.1:$SCAN_HTTP\""; fi
  {
    echo "state_dir: var"
    # warn, plus what shutdown does (the drain, pingora's services stopping)
    echo "log: {format: text, level: \"warn,portcullis_proxy::drain=info,pingora_core::server=info,pingora_core::services=info\"}"
    echo "proxy:"
    echo "  listen: {https: \"127.0.0.1:$SCAN_HTTPS\", http: $http_listen, admin: \"127.0.0.1:$SCAN_ADMIN\"}"
    echo "  tls: {certificate_file: server.pem, private_key_file: server.key}"
    if [ -n "$open_limits" ]; then
      echo "  rate_limits: {rules: [{name: per_ip, key: client_ip, requests_per_period: 100000, burst_requests: 100000}]}"
    fi
    echo "shared: {policy_dir: \"$SCAN_ROOT/policies\"}"
    echo "backend:"
    echo "  listen: \"127.0.0.1:$backend\""
    echo "  admin_listen: null"
    echo "  web_dir: \"$SCAN_ROOT/web/dist\""
    echo "  identity: {access_token_ttl_seconds: 3600}"
  } > portcullis.yaml
  "$SCAN_BIN" check-config portcullis.yaml >/dev/null
  local password=''
  if [ -n "$user" ]; then
    password="scan-$(python3 -c 'import secrets; print(secrets.token_hex(12))')"
    (umask 077
     printf 'username,email,display_name,department,roles,password_format,password\n'
     printf 'bystander,bystander@example.org,Bystander,Facilities,employee,plaintext,%s\n' \
       "bystander-$(python3 -c 'import secrets; print(secrets.token_hex(12))')"
     printf '%s,%s@example.org,Scan %s,Facilities,%s,plaintext,%s\n' \
       "$user" "$user" "$user" "$roles" "$password") > users.csv
    "$SCAN_BIN" --config portcullis.yaml user import users.csv >import.log 2>&1 || { cat import.log >&2; exit 1; }
    rm -f users.csv
  fi
  "$SCAN_BIN" --config portcullis.yaml up > portcullis.log 2>&1 &
  SCAN_PID=$!
  local ready=''
  for _ in $(seq 300); do
    if curl -sf "http://127.0.0.1:$SCAN_ADMIN/health/ready" >/dev/null; then ready=1; break; fi
    if ! kill -0 "$SCAN_PID" 2>/dev/null; then break; fi
    sleep 0.1
  done
  if [ -z "$ready" ]; then
    echo "portcullis did not become ready:" >&2; cat portcullis.log >&2; exit 1
  fi
  if [ ! -f "$SCAN_ROOT/web/dist/index.html" ]; then
    scan_say "web/dist not built (make web): / answers 503 and only the API is scanned"
  fi
  SCAN_TOKEN=''
  if [ -n "$user" ]; then
    SCAN_TOKEN=$(printf '{"username":"%s","password":"%s","client":"api"}' "$user" "$password" |
      curl -sf --cacert "$SCAN_CA" "https://localhost:$SCAN_HTTPS/auth/login" \
        -H 'content-type: application/json' --data-binary @- |
      python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
    [ -n "$SCAN_TOKEN" ] || { echo "sign-in of $user failed" >&2; exit 1; }
  fi
}

# The tool cache (scripts/install-scan-tools.sh puts everything there).
# shellcheck disable=SC2034  # read by the scripts that source this file
SCAN_TOOLS="${PORTCULLIS_TOOLS:-$HOME/.cache/portcullis-tools}"
