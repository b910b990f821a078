# shellcheck shell=bash
# Native components for machines without Docker: a PostgreSQL cluster and a
# Tansu broker (Kafka protocol), each owned by this repository, bound to
# 127.0.0.1 and kept under a data folder of the caller's choosing.
# Sourced by start.sh, scripts/test.sh and scripts/bench.sh; never touches
# the system's own PostgreSQL cluster.

# Tansu 0.6.0, the version whose behaviour docs/ describe, with only the
# storage engine native mode uses: `libsql` is its `sqlite://` engine. Its
# `dynostore` feature (memory:// and s3://) adds no crate to the build and is
# not used (docs/PERFORMANCE.md, "First start").
TANSU_VERSION_FEATURES=(--locked tansu --version 0.6.0 --features libsql)

# Everything these scripts create (logs, pid files, passwords, Tansu's
# SQLite file) is for this user only.
umask 077

log() { printf '\033[1m==>\033[0m %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

export PATH="$HOME/.cargo/bin:$PATH"

pg_bin() {
  local dir
  dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  [ -n "$dir" ] && echo "$dir"
}

ensure_postgres_installed() {
  if [ -n "$(pg_bin)" ]; then return; fi
  command -v apt-get >/dev/null || die "PostgreSQL is missing and apt-get is not available; install PostgreSQL 15+"
  log "Installing PostgreSQL from Debian (apt-get install postgresql)..."
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q postgresql >/dev/null || die "apt-get install postgresql failed"
  [ -n "$(pg_bin)" ] || die "PostgreSQL binaries not found after install"
}

ensure_tansu_installed() {
  if command -v tansu >/dev/null; then
    # One installed before the pin (or by hand) is used as it is.
    case "$(tansu --version 2>/dev/null)" in
      *" 0.6.0"*) ;;
      *) log "warning: $(command -v tansu) is not Tansu 0.6.0, the version docs/ describe; run: cargo install ${TANSU_VERSION_FEATURES[*]} --force" ;;
    esac
    return
  fi
  command -v cargo >/dev/null || die "cargo is needed to install Tansu"
  log "Installing the Tansu broker: cargo install ${TANSU_VERSION_FEATURES[*]}"
  log "(one time; about 10 to 20 minutes on 2 cores; progress below)"
  cargo install "${TANSU_VERSION_FEATURES[@]}" 2>&1 | grep --line-buffered -E '^ *(Compiling|Installing|Installed|error)' \
    | awk '{ n++; if (n % 25 == 0 || /Install|error/) { print "    " $0; fflush() } }'
  command -v tansu >/dev/null || die "Tansu install failed; run: cargo install ${TANSU_VERSION_FEATURES[*]}"
}

# apt_install PACKAGE...: Debian packages, refreshing the package lists once
# if the first try fails (a fresh machine may have none).
apt_install() {
  command -v apt-get >/dev/null || die "$* missing and apt-get is not available"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q "$@" >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null && apt-get install -y -q "$@" >/dev/null; } \
    || die "apt-get install $* failed"
}

# The monitoring test's tools: Debian's prometheus and promtool
# (api/tests/api/monitoring.rs starts a Prometheus of its own).
ensure_prometheus() {
  if command -v prometheus >/dev/null && command -v promtool >/dev/null; then return; fi
  log "Installing Prometheus from Debian (apt-get install prometheus)..."
  apt_install --no-install-recommends prometheus
}

# schemathesis (PyPI), which fuzzes the api against its OpenAPI description
# (api/tests/api/contract.rs), in a virtual environment of its own under
# DIR (Debian's Python refuses installs outside one); prints its path.
SCHEMATHESIS_VERSION=4.32.5
ensure_schemathesis() {
  local venv=$1/schemathesis-venv
  if [ "$("$venv/bin/schemathesis" --version 2>/dev/null)" != "schemathesis, version $SCHEMATHESIS_VERSION" ]; then
    log "Installing schemathesis $SCHEMATHESIS_VERSION from PyPI into $venv..." >&2
    if ! python3 -c 'import ensurepip' 2>/dev/null; then apt_install python3-venv >&2; fi
    rm -rf "$venv"
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install --quiet "schemathesis==$SCHEMATHESIS_VERSION" >&2 \
      || die "could not install schemathesis from PyPI"
  fi
  echo "$venv/bin/schemathesis"
}

# The browser tests' tools: Debian's Chromium, and Node.js 20+ with npm for
# playwright-core (npm cannot download browsers here; it drives this one).
ensure_browser_tools() {
  if [ ! -x /usr/bin/chromium ]; then
    log "Installing Chromium from Debian (apt-get install chromium)..."
    apt_install chromium
  fi
  if ! command -v npm >/dev/null; then
    log "Installing Node.js and npm from Debian..."
    apt_install nodejs npm
  fi
  local major
  major=$(node -p 'process.versions.node.split(".")[0]')
  [ "$major" -ge 20 ] || die "the browser tests need Node.js 20 or newer (playwright-core); found $(node --version)"
}

# wait_port PORT SECONDS: until something accepts TCP on 127.0.0.1:PORT.
wait_port() {
  local port=$1 secs=$2 i
  for ((i = 0; i < secs * 10; i++)); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  return 1
}

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# pg_dir DATA: the folder of the cluster. The postgres user must be able to
# reach it; when the repository sits below a folder it cannot enter (a home
# folder, say), the cluster lives in /var/tmp instead, named after DATA.
pg_dir() {
  local data=$1
  mkdir -p "$data"
  if runuser -u postgres -- test -x "$data" 2>/dev/null; then
    echo "$data/pg"
  else
    echo "/var/tmp/feed-pg-$(echo -n "$(cd "$data" && pwd)" | md5sum | cut -c1-12)"
  fi
}

# secure_data DATA: the data folder lets others through to PostgreSQL's own
# folder inside it (the postgres user must reach it) but shows them nothing,
# and the files already in it (from older runs) are this user's only.
secure_data() {
  local data=$1
  mkdir -p "$data"
  chmod 711 "$data"
  find "$data" -maxdepth 1 -type f -exec chmod 600 {} +
}

# secret DATA NAME: a generated password kept in DATA/NAME (mode 0600),
# made on first use.
secret() {
  local file="$1/$2"
  if [ ! -s "$file" ]; then
    head -c 48 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 32 >"$file"
  fi
  cat "$file"
}

# pg_env DATA PORT: psql in these scripts reads the superuser's password
# from DATA/pgpass (libpq's PGPASSFILE), never from the command line.
pg_env() {
  local data=$1 port=$2
  printf '127.0.0.1:%s:*:postgres:%s\n' "$port" "$(secret "$data" pg-superuser-password)" >"$data/pgpass"
  export PGPASSFILE="$data/pgpass"
}

# pg_superuser_url DATA PORT [DB]: the superuser's URL (tests, tools).
pg_superuser_url() {
  echo "postgresql://postgres:$(secret "$1" pg-superuser-password)@127.0.0.1:$2/${3:-postgres}?sslmode=disable"
}

# pg_start DATA PORT: initialise (once) and start the cluster; idempotent.
# Password (SCRAM) authentication over TCP on 127.0.0.1 only, no Unix
# socket: other local users cannot connect, let alone as the superuser.
pg_start() {
  local data=$1 port=$2 bin dir
  bin=$(pg_bin) || die "PostgreSQL is not installed"
  secure_data "$data"
  dir=$(pg_dir "$data")
  mkdir -p "$dir"
  chown postgres:postgres "$dir"
  chmod 700 "$dir"
  pg_env "$data" "$port"
  if [ ! -f "$dir/PG_VERSION" ]; then
    log "Initialising a PostgreSQL cluster in $dir"
    local pwdir
    pwdir=$(mktemp -d)
    secret "$data" pg-superuser-password >"$pwdir/pw"
    chown -R postgres:postgres "$pwdir"
    runuser -u postgres -- "$bin/initdb" -D "$dir" -U postgres --auth=scram-sha-256 --pwfile="$pwdir/pw" \
      -E UTF8 --locale=C >"$data/initdb.log" 2>&1 || { rm -rf "$pwdir"; die "initdb failed; see $data/initdb.log"; }
    rm -rf "$pwdir"
  fi
  if ! runuser -u postgres -- "$bin/pg_ctl" -D "$dir" status >/dev/null 2>&1; then
    if port_in_use "$port"; then die "port $port is taken by another program; cannot start PostgreSQL there"; fi
    log "Starting PostgreSQL on 127.0.0.1:$port"
    runuser -u postgres -- "$bin/pg_ctl" -D "$dir" -w -t 60 -l "$dir/server.log" start \
      -o "-p $port -c listen_addresses=127.0.0.1 -c unix_socket_directories= -c max_connections=400 -c shared_buffers=256MB" >/dev/null \
      || die "PostgreSQL did not start; see $dir/server.log"
  fi
  pg_require_passwords "$data" "$port" "$dir" "$bin"
}

# pg_require_passwords DATA PORT DIR BIN: a cluster made by an older version
# of these scripts trusted every local connection: give the superuser its
# password (trust still lets this one connection in), then require
# passwords everywhere.
pg_require_passwords() {
  local data=$1 port=$2 dir=$3 bin=$4
  grep -qE '^[^#]*[[:space:]]trust([[:space:]]|$)' "$dir/pg_hba.conf" || return 0
  log "Requiring passwords on the PostgreSQL cluster in $dir (it trusted every local connection)"
  # The statement on standard input, not the command line: another local
  # user reading `ps` must not see the password.
  printf "ALTER ROLE postgres PASSWORD '%s'\n" "$(secret "$data" pg-superuser-password)" \
    | PGPASSWORD= psql -h 127.0.0.1 -p "$port" -U postgres -w -q >/dev/null \
    || die "could not set the superuser's password"
  sed -i -E 's/^([^#]*[[:space:]])trust([[:space:]]|$)/\1scram-sha-256\2/' "$dir/pg_hba.conf"
  runuser -u postgres -- "$bin/pg_ctl" -D "$dir" reload >/dev/null || die "could not reload PostgreSQL"
}

pg_stop() {
  local data=$1 bin dir
  bin=$(pg_bin) || return 0
  dir=$(pg_dir "$data")
  [ -f "$dir/PG_VERSION" ] || return 0
  if runuser -u postgres -- "$bin/pg_ctl" -D "$dir" status >/dev/null 2>&1; then
    runuser -u postgres -- "$bin/pg_ctl" -D "$dir" -m fast -w stop >/dev/null && log "PostgreSQL stopped"
  fi
}

# pg_app_db DATA PORT NAME: the database NAME, owned by a role of the same
# name that is not a superuser (what the api connects as), with a generated
# password (DATA/pg-NAME-password). Idempotent; tables an older version
# created as the superuser are handed to the role.
pg_app_db() {
  local data=$1 port=$2 name=$3 pw
  pw=$(secret "$data" "pg-$name-password")
  local q=(psql -h 127.0.0.1 -p "$port" -U postgres -w -v ON_ERROR_STOP=1 -qtA)
  # Passwords go on standard input, never on a command line (`ps` shows those).
  if "${q[@]}" -c "SELECT 1 FROM pg_roles WHERE rolname='$name'" | grep -q 1; then
    printf "ALTER ROLE \"%s\" LOGIN PASSWORD '%s'\n" "$name" "$pw" | "${q[@]}" >/dev/null
  else
    printf "CREATE ROLE \"%s\" LOGIN PASSWORD '%s'\n" "$name" "$pw" | "${q[@]}" >/dev/null
  fi
  if ! "${q[@]}" -c "SELECT 1 FROM pg_database WHERE datname='$name'" | grep -q 1; then
    "${q[@]}" -c "CREATE DATABASE \"$name\" OWNER \"$name\"" >/dev/null
  fi
  "${q[@]}" -c "ALTER DATABASE \"$name\" OWNER TO \"$name\"" >/dev/null
  local table
  for table in $("${q[@]}" -d "$name" -c "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tableowner <> '$name'"); do
    "${q[@]}" -d "$name" -c "ALTER TABLE public.\"$table\" OWNER TO \"$name\"" >/dev/null
  done
}

# pg_app_url DATA PORT NAME: the URL the api uses for pg_app_db's database.
pg_app_url() {
  echo "postgresql://$3:$(secret "$1" "pg-$3-password")@127.0.0.1:$2/$3?sslmode=disable"
}

# tansu_start DATA PORT: a Tansu broker with SQLite storage in DATA; idempotent.
tansu_start() {
  local data=$1 port=$2 pidfile="$1/tansu.pid"
  mkdir -p "$data"
  if pidfile_alive "$pidfile" tansu; then return 0; fi
  if port_in_use "$port" && ! wait_port_free "$port" 5; then die "port $port is taken by another program; cannot start Tansu there"; fi
  log "Starting Tansu (Kafka protocol) on 127.0.0.1:$port, storage $data/tansu.db"
  (
    cd "$data" || exit 1
    nohup tansu broker \
      --listener-url "tcp://127.0.0.1:$port" \
      --advertised-listener-url "tcp://127.0.0.1:$port" \
      --storage-engine "sqlite://tansu.db" >"tansu.log" 2>&1 &
    echo $! >"tansu.pid"
  )
  wait_port "$port" 60 || die "Tansu did not start; see $data/tansu.log"
}

# alive PID [NAME]: the process exists, is not exiting (a zombie, or dead
# but not yet reaped) and, when NAME is given, runs a program of that name
# (a pid file can outlive its process and the pid be reused).
alive() {
  local pid=$1 name=${2:-} state comm
  [ -n "$pid" ] && [ -r "/proc/$pid/stat" ] || return 1
  state=$(awk '{ sub(/^.*\) /, ""); print $1 }' "/proc/$pid/stat" 2>/dev/null) || return 1
  case "$state" in Z | X | x | "") return 1 ;; esac
  if [ -n "$name" ]; then
    comm=$(cat "/proc/$pid/comm" 2>/dev/null) || return 1
    [ "$comm" = "${name:0:15}" ] || return 1
  fi
}

# pidfile_alive FILE [NAME]: the process of a pid file is alive.
pidfile_alive() { [ -f "$1" ] && alive "$(cat "$1")" "${2:-}"; }

# wait_gone PID SECONDS: until the process has exited (true) or the time is up.
wait_gone() {
  local pid=$1 secs=$2 i
  for ((i = 0; i < secs * 10; i++)); do alive "$pid" || return 0; sleep 0.1; done
  return 1
}

# wait_port_free PORT SECONDS: until nothing accepts on 127.0.0.1:PORT.
wait_port_free() {
  local port=$1 secs=$2 i
  for ((i = 0; i < secs * 10; i++)); do port_in_use "$port" || return 0; sleep 0.1; done
  return 1
}

# stop_pidfile FILE NAME [PROGRAM]: SIGTERM, then SIGKILL after 15 s, only if
# the pid still runs PROGRAM (a stale pid file may name someone else's process).
# Never fails: stopping goes on with the next component.
stop_pidfile() {
  local pidfile=$1 name=$2 program=${3:-} pid
  [ -f "$pidfile" ] || return 0
  pid=$(cat "$pidfile")
  if alive "$pid" "$program"; then
    kill -TERM "$pid" 2>/dev/null || true
    if wait_gone "$pid" 15; then log "$name stopped"; else kill -KILL "$pid" 2>/dev/null || true; wait_gone "$pid" 5 || true; log "$name killed"; fi
  fi
  rm -f "$pidfile"
}
