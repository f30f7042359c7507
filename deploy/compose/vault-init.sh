#!/bin/sh
# One-shot initialisation of the compose Vault (docker compose run --rm
# vault-init): init with 5 shares / threshold 3, unseal, file audit device,
# KV v2 at secret/, approle and jwt, Lockdown's policies and its
# install-time tokens. It writes, under deploy/compose/secrets/ (git-ignored,
# mode 600): vault-init.txt (the unseal shares and root token: give each
# share to one key holder, then delete the file) and one env file per
# service with that service's token only.
set -eu
# The paths default to the compose container's mounts; the deploy tests
# run the same script against a local Vault with their own.
export VAULT_ADDR=${VAULT_ADDR:-http://vault:8200}
out=${OUT_DIR:-/init/secrets}
policies=${POLICY_DIR:-/policies}
audit_file=${AUDIT_FILE:-/vault/logs/audit.log}
mkdir -p "$out"
umask 077
if vault status 2>/dev/null | grep -q '^Initialized *true'; then
  echo "vault is already initialised; nothing to do" >&2
  exit 0
fi
vault operator init -key-shares=5 -key-threshold=3 > "$out/vault-init.txt"
for key in $(grep '^Unseal Key [123]:' "$out/vault-init.txt" | awk '{print $4}'); do
  vault operator unseal "$key" > /dev/null
done
VAULT_TOKEN=$(grep '^Initial Root Token:' "$out/vault-init.txt" | awk '{print $4}')
export VAULT_TOKEN
# World-readable: the assessor's container (another user) follows it. The
# log holds HMAC'd values, never a token or secret in clear.
vault audit enable file file_path="$audit_file" mode=0644
vault secrets enable -path=secret kv-v2
vault auth enable approle
vault auth enable jwt
for p in "$policies"/*.hcl; do
  vault policy write "$(basename "$p" .hcl)" "$p"
done
token() { vault token create -orphan -period=768h -policy="$1" -display-name="$1" -field=token; }
accessor() { vault token lookup -field=accessor "$1"; }
seal=$(token lockdown-seal)
recovery=$(token lockdown-recovery)
rotator=$(token lockdown-rotator)
cat > "$out/containment.env" <<ENV
LOCKDOWN_VAULT_SEAL_TOKEN=$seal
LOCKDOWN_VAULT_RECOVERY_TOKEN=$recovery
LOCKDOWN_KEEP_ACCESSORS=$(accessor "$seal"),$(accessor "$recovery"),$(accessor "$rotator")
ENV
cat > "$out/rotator.env" <<ENV
LOCKDOWN_VAULT_TOKEN=$rotator
ENV
# Run as root inside the container: hand the files to the host user that
# runs docker compose (HOST_UID/HOST_GID), who must read the env files.
if [ -n "${HOST_UID:-}" ]; then
  chown "$HOST_UID:${HOST_GID:-$HOST_UID}" "$out" "$out"/*
fi
echo "vault initialised; shares and root token in deploy/compose/secrets/vault-init.txt — hand them out and delete the file" >&2
