#!/usr/bin/env bash
# Shared PostgreSQL helpers (sourced by scripts/dev, scripts/test, benches): find or install the server
# binaries and run a private, throw-away cluster. Can also be executed: scripts/lib/pg.sh FUNCTION ARGS...
# shellcheck shell=bash
set -euo pipefail

_ts_pg_log() { printf '[pg] %s\n' "$*" >&2; }

# Run a command as root (directly, or through sudo when we are not root and sudo exists).
_ts_as_root() {
  if [[ $(id -u) -eq 0 ]]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    _ts_pg_log "need root to run: $* (no sudo available); install PostgreSQL server binaries yourself"
    return 1
  fi
}

# Run a command as the owner of private clusters: the `postgres` OS user when we are root
# (initdb and pg_ctl refuse to run as root), otherwise the current user. Runs from / so an
# unreadable current directory (e.g. /root) does not matter; paths passed in must be absolute.
_ts_as_pg_owner() {
  if [[ $(id -u) -eq 0 ]]; then
    if command -v runuser >/dev/null 2>&1; then
      (cd / && runuser -u postgres -- "$@")
    else
      local cmd
      cmd=$(printf '%q ' "$@")
      (cd / && su postgres -s /bin/sh -c "$cmd")
    fi
  else
    "$@"
  fi
}

# Directory holding initdb/pg_ctl/postgres (and pg_config) of the newest installed server, or empty.
_ts_pg_find_bindir() {
  local d best=""
  # Debian/Ubuntu layout: /usr/lib/postgresql/<major>/bin; pick the highest major.
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V); do
    [[ -x $d/initdb && -x $d/pg_ctl ]] && best=$d
  done
  if [[ -z $best ]] && command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
    best=$(dirname "$(readlink -f "$(command -v initdb)")")
  fi
  printf '%s' "$best"
}

# Is the contrib extension EXT (control file) installed for the server in BINDIR?
_ts_pg_has_extension() {
  local bindir=$1 ext=$2 sharedir=""
  if [[ -x $bindir/pg_config ]]; then
    sharedir=$("$bindir/pg_config" --sharedir 2>/dev/null || true)
  fi
  if [[ -n $sharedir && -f $sharedir/extension/$ext.control ]]; then
    return 0
  fi
  # Fallback for Debian when pg_config is absent: /usr/share/postgresql/<major>/extension.
  local major
  major=$(basename "$(dirname "$bindir")")
  [[ -f /usr/share/postgresql/$major/extension/$ext.control ]]
}

# Make initdb, pg_ctl, postgres, psql and pg_isready callable (prepends their directory to PATH),
# installing PostgreSQL from apt if no server binaries are found. Also makes sure the pgcrypto
# and hstore extensions (needed by apalis-postgres, which the benchmark compares against) are installed.
ts_ensure_pg_binaries() {
  local bindir
  bindir=$(_ts_pg_find_bindir)
  if [[ -z $bindir ]] || ! _ts_pg_has_extension "$bindir" pgcrypto || ! _ts_pg_has_extension "$bindir" hstore; then
    _ts_pg_log "PostgreSQL server binaries or contrib extensions missing; installing from apt"
    _ts_as_root apt-get update
    _ts_as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql postgresql-contrib
    bindir=$(_ts_pg_find_bindir)
  fi
  if [[ -z $bindir ]]; then
    _ts_pg_log "could not find initdb/pg_ctl after installing PostgreSQL"
    return 1
  fi
  local ext
  for ext in pgcrypto hstore; do
    if ! _ts_pg_has_extension "$bindir" "$ext"; then
      _ts_pg_log "extension $ext is not installed for the server in $bindir (install postgresql-contrib)"
      return 1
    fi
  done
  case ":$PATH:" in
    *":$bindir:"*) ;;
    *) PATH="$bindir:$PATH"; export PATH ;;
  esac
  if ! command -v psql >/dev/null 2>&1 || ! command -v pg_isready >/dev/null 2>&1; then
    _ts_pg_log "psql/pg_isready not found (install postgresql-client)"
    return 1
  fi
}

# Is a server in DIR running (according to pg_ctl)?
ts_private_cluster_running() {
  local dir=$1
  [[ -f $dir/PG_VERSION ]] || return 1
  _ts_as_pg_owner pg_ctl -D "$dir" status >/dev/null 2>&1
}

# ts_start_private_cluster DIR PORT [EXTRA_SERVER_OPTIONS]
# Creates (initdb, superuser `postgres`, trust auth) and starts a cluster in DIR listening on
# 127.0.0.1:PORT, with its unix socket in DIR. Idempotent: reuses an existing data directory and
# does nothing if the server is already running. EXTRA_SERVER_OPTIONS is appended to the
# postgres options, e.g. "-c fsync=off -c synchronous_commit=off" for tests. Log: DIR/log.
# Connect with postgres://postgres@127.0.0.1:PORT/postgres.
ts_start_private_cluster() {
  local dir=$1 port=$2 extra=${3:-}
  ts_ensure_pg_binaries
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd -P)
  if [[ $(id -u) -eq 0 ]]; then
    if ! id postgres >/dev/null 2>&1; then
      _ts_pg_log "running as root but there is no 'postgres' OS user to own the cluster"
      return 1
    fi
    chown -R postgres:postgres "$dir"
    if ! runuser -u postgres -- test -w "$dir" 2>/dev/null; then
      _ts_pg_log "the postgres OS user cannot reach $dir (a parent directory is not traversable);"
      _ts_pg_log "run as a non-root user or move the checkout"
      return 1
    fi
  fi
  chmod 700 "$dir"
  if [[ ! -f $dir/PG_VERSION ]]; then
    _ts_pg_log "initdb $dir"
    _ts_as_pg_owner initdb -D "$dir" -U postgres --auth=trust --encoding=UTF8 --no-locale >"$dir.initdb.log" 2>&1 || {
      cat "$dir.initdb.log" >&2
      return 1
    }
    rm -f "$dir.initdb.log"
  fi
  if ts_private_cluster_running "$dir"; then
    _ts_pg_log "cluster in $dir already running"
    return 0
  fi
  # Unix socket paths are limited to ~107 bytes; fall back to TCP only for deep checkouts.
  local sockdir=$dir
  if (( ${#dir} + 20 > 100 )); then
    sockdir=""
  fi
  local opts="-p $port -c listen_addresses=127.0.0.1 -c max_connections=300"
  if [[ -n $sockdir ]]; then
    opts+=" -k $sockdir"
  else
    opts+=" -c unix_socket_directories=''"
  fi
  [[ -n $extra ]] && opts+=" $extra"
  _ts_pg_log "starting cluster $dir on 127.0.0.1:$port"
  if ! _ts_as_pg_owner pg_ctl -D "$dir" -o "$opts" -w -t 60 -l "$dir/log" start >/dev/null; then
    _ts_pg_log "PostgreSQL failed to start; tail of $dir/log:"
    tail -n 30 "$dir/log" >&2 || true
    return 1
  fi
}

# ts_stop_private_cluster DIR — fast shutdown if running; keeps the data directory.
ts_stop_private_cluster() {
  local dir=$1
  [[ -d $dir ]] || return 0
  dir=$(cd "$dir" && pwd -P)
  if ts_private_cluster_running "$dir"; then
    _ts_pg_log "stopping cluster $dir"
    _ts_as_pg_owner pg_ctl -D "$dir" -m fast -w -t 60 stop >/dev/null
  fi
}

# ts_pg_answers URL — true if a server answers a query at URL (auth included, never prompts).
ts_pg_answers() {
  local url=$1
  if command -v psql >/dev/null 2>&1; then
    [[ $(PGCONNECT_TIMEOUT=3 psql -w -X -q -At -d "$url" -c 'select 1' </dev/null 2>/dev/null) == 1 ]]
  else
    PGCONNECT_TIMEOUT=3 pg_isready -q -d "$url" >/dev/null 2>&1
  fi
}

# ts_pg_wait URL [SECONDS] — wait until ts_pg_answers URL (default 30 s).
ts_pg_wait() {
  local url=$1 secs=${2:-30} i
  for ((i = 0; i < secs * 2; i++)); do
    ts_pg_answers "$url" && return 0
    sleep 0.5
  done
  return 1
}

# ts_pg_create_db ADMIN_URL NAME — create database NAME if it does not exist.
ts_pg_create_db() {
  local url=$1 name=$2
  psql -w -X -q -v ON_ERROR_STOP=1 -d "$url" -v dbname="$name" >/dev/null <<'SQL'
SELECT format('CREATE DATABASE %I', :'dbname')
WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'dbname')
\gexec
SQL
}

# ts_pg_url_with_db URL DB — URL with its database path replaced by DB (query string kept).
ts_pg_url_with_db() {
  local url=$1 db=$2 query=""
  if [[ $url == *\?* ]]; then
    query="?${url#*\?}"
    url=${url%%\?*}
  fi
  local scheme_rest=${url#*://}
  local scheme=${url%%://*}
  local authority=${scheme_rest%%/*}
  printf '%s://%s/%s%s' "$scheme" "$authority" "$db" "$query"
}

# Executed directly: dispatch to a function, e.g. `scripts/lib/pg.sh ts_pg_answers URL`.
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
  if [[ $# -eq 0 || $1 == -h || $1 == --help ]]; then
    grep -E '^(ts_[a-z_]+)\(\)' "$0" | sed 's/().*//' | sed 's/^/  /' >&2
    exit 0
  fi
  "$@"
fi
