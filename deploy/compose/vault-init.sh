#!/bin/sh
# One-shot initialisation of the compose Vault (docker compose run --rm
# vault-init): init with 5 shares / threshold 3, unseal, file audit device,
# KV v2 at secret/, approle and jwt, Lockdown's policies and its
# install-time tokens. It writes, under deploy/compose/secrets/ (git-ignored,
# mode 600): vault-init.txt (the unseal shares and root token: give each
# share to one key holder, then delete the file) and tokens/, one file per
# Lockdown token, owned by the services' user.
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
# Token roles: Lockdown's tokens are issued from them, and containment
# mints their successors from them in every incident.
for r in seal recovery rotator; do
  vault write "auth/token/roles/lockdown-$r" allowed_policies="lockdown-$r" orphan=true token_period=768h renewable=true token_no_default_policy=true > /dev/null
done
# One file per token, owned by the services' user (distroless nonroot):
# containment replaces each with its successor in every incident, and the
# rotators re-read theirs.
tokens="$out/tokens"
mkdir -p "$tokens"
for r in seal recovery rotator; do
  vault token create -role="lockdown-$r" -field=token > "$tokens/$r.token"
done
chown -R "${TOKEN_UID:-65532}:${TOKEN_GID:-${TOKEN_UID:-65532}}" "$tokens"
# Run as root inside the container: hand vault-init.txt to the host user
# that runs docker compose (HOST_UID/HOST_GID).
if [ -n "${HOST_UID:-}" ]; then
  chown "$HOST_UID:${HOST_GID:-$HOST_UID}" "$out" "$out/vault-init.txt"
fi
echo "vault initialised; shares and root token in deploy/compose/secrets/vault-init.txt — hand them out and delete the file" >&2
