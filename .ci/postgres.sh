#!/usr/bin/env bash
# A throwaway PostgreSQL on 127.0.0.1 for the test suite.
#   .ci/postgres.sh start DIR   -> initdb in DIR, start on a free port, print the database URL
#   .ci/postgres.sh stop DIR    -> stop it (safe to call whatever state it is in)
#   .ci/postgres.sh down DIR    -> stop the server, keeping its data (a restart, with `up`)
#   .ci/postgres.sh up DIR      -> start it again on the same port
# The server binaries refuse to run as root, so as root they run as the `postgres` user.
set -euo pipefail

action=${1:?start or stop}
dir=${2:?directory}
bindir=$(pg_config --bindir)

as_owner() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

server_start() {
  as_owner "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
    -o "-p $(cat "$dir/port") -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200" \
    start >/dev/null
}

case "$action" in
  start)
    mkdir -p "$dir"
    [ "$(id -u)" = 0 ] && chown postgres "$dir"
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    as_owner "$bindir/initdb" -D "$dir/data" -U postgres -A trust --no-sync >"$dir/initdb.log"
    echo "$port" >"$dir/port"
    server_start
    as_owner "$bindir/psql" -h 127.0.0.1 -p "$port" -U postgres -q -c "CREATE DATABASE agent_runs_test" >/dev/null
    echo "postgresql+asyncpg://postgres@127.0.0.1:$port/agent_runs_test"
    ;;
  stop)
    if [ -f "$dir/data/postmaster.pid" ]; then
      as_owner "$bindir/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null || true
    fi
    rm -rf "$dir"
    ;;
  down)
    as_owner "$bindir/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null
    ;;
  up)
    server_start
    ;;
  *)
    echo "usage: $0 start|stop|down|up DIR" >&2
    exit 2
    ;;
esac
