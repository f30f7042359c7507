#!/bin/sh
# Lockdown's PostgreSQL roles (deploy/postgres/roles.sql): one per service
# owning its schema (the CLI has none: it reads the read model in NATS). The postgres image runs
# this once, on an empty data directory (docker-entrypoint-initdb.d); on an
# existing volume run `lockdown install postgres` instead.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -v containment_password="$LOCKDOWN_POSTGRES_PASSWORD_CONTAINMENT" \
  -v assessor_password="$LOCKDOWN_POSTGRES_PASSWORD_ASSESSOR" \
  -v rotator_password="$LOCKDOWN_POSTGRES_PASSWORD_ROTATOR" \
  -v notifier_password="$LOCKDOWN_POSTGRES_PASSWORD_NOTIFIER" \
  -f /lockdown/roles.sql
