#!/bin/sh
# Lockdown's PostgreSQL roles (deploy/postgres/roles.sql): one per service
# owning its schema, and lockdown_cli reading them. The postgres image runs
# this once, on an empty data directory (docker-entrypoint-initdb.d); on an
# existing volume run `lockdown install postgres` instead.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -v containment_password="$LOCKDOWN_POSTGRES_PASSWORD_CONTAINMENT" \
  -v assessor_password="$LOCKDOWN_POSTGRES_PASSWORD_ASSESSOR" \
  -v rotator_password="$LOCKDOWN_POSTGRES_PASSWORD_ROTATOR" \
  -v notifier_password="$LOCKDOWN_POSTGRES_PASSWORD_NOTIFIER" \
  -v lockdown_cli_password="$LOCKDOWN_POSTGRES_PASSWORD_LOCKDOWN_CLI" \
  -f /lockdown/roles.sql
