# PostgreSQL as the Prefect server's database, for deployments/stack.sh (sourced when
# PREFECT_DB=postgres). A cluster of Debian's `postgresql` package (initdb / pg_ctl), listening on
# 127.0.0.1 only, owned by a non-root user: the `postgres` account when the stack runs as root.
# Settings:
#   PREFECT_DB_DIR       the cluster's directory (STACK_DIR/postgres); kept by `down`, so the
#                        database survives restarts. As root it is handed to the postgres user,
#                        which must be able to reach it.
#   PREFECT_DB_PORT      5432
#   PREFECT_DB_PASSWORD  the password of the `prefect` role; generated on first start and kept in
#                        STACK_DIR/db.password (mode 600) when unset. Only the server's
#                        environment carries it (PREFECT_SERVER_DATABASE_PASSWORD), never a
#                        command line.
# Needs: DIR (the stack directory), BIN (the venv's bin).

DB_DIR=$(realpath -m "${PREFECT_DB_DIR:-$DIR/postgres}")
DB_PORT=${PREFECT_DB_PORT:-5432}
PG_BIN=${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2> /dev/null | sort -V | tail -1)}

as_db_owner() {  # run a command as the cluster's owner (postgres refuses to run as root)
  if [[ $(id -u) == 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}

db_password() {
  if [[ -n ${PREFECT_DB_PASSWORD:-} ]]; then printf '%s' "$PREFECT_DB_PASSWORD"; return; fi
  if [[ ! -s $DIR/db.password ]]; then
    (umask 077 && "$BIN/python" -c "import secrets; print(secrets.token_hex(24), end='')" > "$DIR/db.password")
  fi
  cat "$DIR/db.password"
}

db_up() {  # start the cluster (creating it and the `prefect` database on first use)
  [[ -x $PG_BIN/pg_ctl ]] || { echo "PREFECT_DB=postgres needs PostgreSQL: apt-get install postgresql (or set PG_BIN)"; exit 1; }
  local data=$DB_DIR/data password
  password=$(db_password)
  if [[ ! -f $data/PG_VERSION ]]; then
    mkdir -p "$DB_DIR"
    [[ $(id -u) == 0 ]] && chown postgres: "$DB_DIR"
    as_db_owner test -w "$DB_DIR" || { echo "the postgres user cannot write $DB_DIR: set PREFECT_DB_DIR to a directory it can reach"; exit 1; }
    # the superuser `prefect` owns the database; its password goes through a file only its owner
    # can read (never argv), removed once the cluster exists
    printf '%s\n' "$password" | as_db_owner sh -c 'umask 077 && cat > "$1"' _ "$DB_DIR/pwfile"
    as_db_owner "$PG_BIN/initdb" -D "$data" -U prefect --auth=scram-sha-256 --pwfile="$DB_DIR/pwfile" -E UTF8 \
      > "$DB_DIR/initdb.log" 2>&1 || { rm -f "$DB_DIR/pwfile"; tail -20 "$DB_DIR/initdb.log"; exit 1; }
    rm -f "$DB_DIR/pwfile"
  fi
  if ! as_db_owner "$PG_BIN/pg_ctl" -D "$data" status > /dev/null 2>&1; then
    as_db_owner "$PG_BIN/pg_ctl" -D "$data" -l "$DB_DIR/postgres.log" -w -t 60 start \
      -o "-c listen_addresses=127.0.0.1 -p $DB_PORT -c unix_socket_directories=$DB_DIR" > /dev/null \
      || { echo "postgres failed to start:"; tail -20 "$DB_DIR/postgres.log"; exit 1; }
  fi
  PGPASSWORD=$password "$PG_BIN/psql" -h 127.0.0.1 -p "$DB_PORT" -U prefect -d postgres -qtA \
    -c "SELECT 1 FROM pg_database WHERE datname = 'prefect'" | grep -q 1 \
    || PGPASSWORD=$password "$PG_BIN/createdb" -h 127.0.0.1 -p "$DB_PORT" -U prefect prefect
  export PREFECT_SERVER_DATABASE_DRIVER=postgresql+asyncpg PREFECT_SERVER_DATABASE_HOST=127.0.0.1 \
    PREFECT_SERVER_DATABASE_PORT=$DB_PORT PREFECT_SERVER_DATABASE_USER=prefect \
    PREFECT_SERVER_DATABASE_NAME=prefect PREFECT_SERVER_DATABASE_PASSWORD=$password
  echo "database: postgresql://prefect@127.0.0.1:$DB_PORT/prefect ($DB_DIR)"
}

db_down() {  # stop the cluster; its data stays in DB_DIR
  local data=$DB_DIR/data
  if [[ -f $data/PG_VERSION ]] && as_db_owner "$PG_BIN/pg_ctl" -D "$data" status > /dev/null 2>&1; then
    as_db_owner "$PG_BIN/pg_ctl" -D "$data" -m fast -w stop > /dev/null && echo "stopped postgres"
  fi
}
