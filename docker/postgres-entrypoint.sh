#!/bin/sh
# Entry point of the PostgreSQL stand-in (services.Dockerfile): on first start, a cluster whose
# superuser POSTGRES_USER has POSTGRES_PASSWORD (read from a file only this user can read, never
# argv) and a database POSTGRES_DB; then `postgres ARGS`, as the official image does.
set -eu
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  : "${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD}"
  user=${POSTGRES_USER:-postgres}
  pwfile=$(mktemp)
  printf '%s\n' "$POSTGRES_PASSWORD" > "$pwfile"
  initdb -D "$PGDATA" -U "$user" --auth=scram-sha-256 --pwfile="$pwfile" -E UTF8 > /dev/null
  rm -f "$pwfile"
  pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start > /dev/null
  if [ "${POSTGRES_DB:-$user}" != postgres ]; then
    PGPASSWORD=$POSTGRES_PASSWORD createdb -U "$user" "${POSTGRES_DB:-$user}"
  fi
  pg_ctl -D "$PGDATA" -m fast -w stop > /dev/null
fi
if [ "${1:-}" = postgres ]; then
  shift
  exec postgres -D "$PGDATA" "$@"
fi
exec "$@"
