# Private redis-server and PostgreSQL instances for tests and local runs. Source this file.
#
#   wk_free_port                        prints a free loopback TCP port
#   wk_redis_start DIR PORT             starts redis-server on 127.0.0.1:PORT, state in DIR
#   wk_redis_stop DIR
#   wk_pg_start DIR PORT                initdb (once) into DIR/data, starts on 127.0.0.1:PORT
#   wk_pg_data_dir DIR                  where DIR/data really is (see the function)
#   wk_pg_stop DIR
#   wk_pg_bin                           prints the PostgreSQL bin directory
#   wk_pg_createdb PORT NAME            creates database NAME unless it exists
#   wk_redis_answers HOST PORT / wk_pg_answers HOST PORT    true when the server answers
#
# PostgreSQL refuses to run as root: as root, initdb/pg_ctl run as the `postgres` user (via
# runuser) on directories chowned to it. Its unix socket lives inside the data directory so
# nothing touches /var/run/postgresql.

# A port below the kernel's ephemeral range (32768+ by default), where neither bind(0) nor an
# outgoing connection can be handed it between this check and the server starting.
wk_free_port() {
  python3 - <<'PY'
import random, socket
low = 20000
try:
    high = min(int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0]), 65536)
except (OSError, ValueError, IndexError):
    high = 32768
if high - low < 1000:
    low, high = 1024, high
for _ in range(200):
    port = random.randrange(low, high)
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
    except OSError:
        continue
    finally:
        s.close()
    print(port)
    break
else:
    raise SystemExit("wk_free_port: no free port")
PY
}

wk_redis_answers() {
  [[ "$(redis-cli -h "$1" -p "$2" ping 2>/dev/null)" == "PONG" ]]
}

wk_pg_bin() {
  local d
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)
  [[ -n "$d" ]] || { echo "services: no PostgreSQL under /usr/lib/postgresql" >&2; return 1; }
  echo "$d"
}

wk_pg_answers() {
  "$(wk_pg_bin)/pg_isready" -q -h "$1" -p "$2" >/dev/null 2>&1
}

# Waits up to ~20 s for `check` (a command) to succeed.
wk_wait_for() {
  local what=$1; shift
  local i
  for ((i = 0; i < 200; i++)); do
    "$@" && return 0
    sleep 0.1
  done
  echo "services: $what did not come up" >&2
  return 1
}

wk_redis_start() {
  local dir=$1 port=$2
  mkdir -p "$dir"
  redis-server --bind 127.0.0.1 --port "$port" --dir "$dir" --daemonize yes \
    --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" --save "" --appendonly no >/dev/null
  wk_wait_for "redis-server on port $port" wk_redis_answers 127.0.0.1 "$port"
}

wk_redis_stop() {
  local dir=$1 pid
  [[ -f "$dir/redis.pid" ]] || return 0
  pid=$(cat "$dir/redis.pid")
  if kill "$pid" 2>/dev/null; then
    local i
    for ((i = 0; i < 100; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -f "$dir/redis.pid"
}

# Runs a PostgreSQL tool, as the postgres user when we are root.
wk_pg_run() {
  if [[ $(id -u) -eq 0 ]]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

# The data directory of the private PostgreSQL whose state is DIR: DIR/data, except as root when
# the `postgres` user cannot reach DIR (a checkout under /root, mode 0700, where root's clones
# normally live). Then the data lives in a directory of postgres's own under /var/tmp, named
# after DIR, and DIR/data is a symlink to it, so every other path stays the same for root.
wk_pg_data_dir() {
  local dir=$1 real
  if [[ -L "$dir/data" ]]; then
    readlink -f "$dir/data"
  elif [[ $(id -u) -ne 0 ]] || runuser -u postgres -- test -x "$dir" 2>/dev/null; then
    echo "$dir/data"
  else
    real="/var/tmp/autodevs-worker-pg-$(realpath "$dir" | sha1sum | cut -c1-16)"
    mkdir -p "$real" && chown postgres: "$real" && chmod 700 "$real" && ln -sfn "$real" "$dir/data" || return 1
    echo "$real"
  fi
}

wk_pg_start() {
  local dir=$1 port=$2 bin data
  bin=$(wk_pg_bin)
  mkdir -p "$dir"
  if [[ $(id -u) -eq 0 ]]; then chown postgres: "$dir"; fi
  data=$(wk_pg_data_dir "$dir") || return 1
  if [[ ! -f "$data/PG_VERSION" ]]; then
    wk_pg_run "$bin/initdb" -D "$data" -U postgres --auth=trust -E UTF8 --no-instructions >"$dir/initdb.log" 2>&1 ||
      { cat "$dir/initdb.log" >&2; return 1; }
  fi
  wk_pg_run "$bin/pg_ctl" -D "$data" -l "$data/postgres.log" -w -t 30 \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $data -c fsync=off -c full_page_writes=off" start >/dev/null ||
    { tail -n 20 "$data/postgres.log" >&2; return 1; }
  wk_wait_for "PostgreSQL on port $port" wk_pg_answers 127.0.0.1 "$port"
}

wk_pg_stop() {
  local dir=$1
  [[ -f "$dir/data/postmaster.pid" ]] || return 0
  wk_pg_run "$(wk_pg_bin)/pg_ctl" -D "$(readlink -f "$dir/data")" -m fast -w stop >/dev/null 2>&1 || true
}

# Creates database `name` (and login role `owner`, when given and missing) on a private
# (trust-authenticated) server.
wk_pg_createdb() {
  local port=$1 name=$2 owner=${3:-postgres} bin
  bin=$(wk_pg_bin)
  if [[ "$owner" != postgres ]] && ! "$bin/psql" -h 127.0.0.1 -p "$port" -U postgres -tAc \
      "SELECT 1 FROM pg_roles WHERE rolname = '$owner'" postgres | grep -q 1; then
    "$bin/createuser" -h 127.0.0.1 -p "$port" -U postgres "$owner"
  fi
  if ! "$bin/psql" -h 127.0.0.1 -p "$port" -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$name'" postgres |
    grep -q 1; then
    "$bin/createdb" -h 127.0.0.1 -p "$port" -U postgres -O "$owner" "$name"
  fi
}

# True when `user` (password from PGPASSWORD, if any) can log in to database `name`.
wk_pg_login() {
  local host=$1 port=$2 user=$3 name=$4
  PGCONNECT_TIMEOUT=3 "$(wk_pg_bin)/psql" -h "$host" -p "$port" -U "$user" -w -tAc "SELECT 1" "$name" >/dev/null 2>&1
}
