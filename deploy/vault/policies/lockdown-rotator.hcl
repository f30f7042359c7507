# lockdown-rotator: the rotator's token (phase 6). It is write-only on the
# tenants' secrets: it writes each tenant's new SSH, SMTP and DKIM secret
# (check-and-set) and destroys every API key, and it can read no secret but
# a staged DKIM key (below).
#
# To find which write produced a secret's latest version (an attempt that
# died before recording it), the rotator reads the version's subkeys — key
# names with every value null — where its write id is a key name
# (lockdown_write), and the metadata for the current version number.
# The audit gate: before every secret write the rotator lists the audit
# devices and writes nothing while one is not declared in the baseline (a
# root intruder's device with log_raw would receive the secret in clear).
# Listing needs sudo; sudo on this path grants nothing else.
path "sys/audit" {
  capabilities = ["read", "sudo"]
}

# Its own token (minted without Vault's default policy): look it up
# (containment checks every successor before handing it over) and renew it
# (a periodic token).
path "auth/token/lookup-self" {
  capabilities = ["read"]
}
path "auth/token/renew-self" {
  capabilities = ["update"]
}
path "secret/data/tenants/+/ssh" {
  capabilities = ["create", "update"]
}
path "secret/data/tenants/+/smtp" {
  capabilities = ["create", "update"]
}
path "secret/data/tenants/+/dkim" {
  capabilities = ["create", "update"]
}
path "secret/subkeys/tenants/+/ssh" {
  capabilities = ["read"]
}
path "secret/subkeys/tenants/+/smtp" {
  capabilities = ["read"]
}
path "secret/subkeys/tenants/+/dkim" {
  capabilities = ["read"]
}
path "secret/metadata/tenants/+/ssh" {
  capabilities = ["read"]
}
path "secret/metadata/tenants/+/smtp" {
  capabilities = ["read"]
}
path "secret/metadata/tenants/+/dkim" {
  capabilities = ["read"]
}
# API keys: list a tenant's keys and destroy each (DELETE on the metadata
# removes every version; a KV v2 delete would only hide the latest).
path "secret/metadata/api_keys/+/" {
  capabilities = ["list"]
}
path "secret/metadata/api_keys/+/*" {
  capabilities = ["delete"]
}
# DKIM keys are staged before they become active (services/rotator/internal/
# rotation/dkim.go): the new key is written to dkim-pending, made active by
# copying it to dkim once its record is published, and then destroyed. The
# staged key is the one secret the rotator may read back — a tenant that
# publishes its own DNS may take days, and the key must survive the rotator
# process meanwhile. docs/security.md weighs what that grants a holder of
# this token.
path "secret/data/tenants/+/dkim-pending" {
  capabilities = ["create", "update", "read"]
}
path "secret/subkeys/tenants/+/dkim-pending" {
  capabilities = ["read"]
}
path "secret/metadata/tenants/+/dkim-pending" {
  capabilities = ["read", "delete"]
}
# ---- generated from the rotation catalogue (rotator policy): do not edit below ----
# platform-transit (transit on transit)
# list the keys ("*")
path "transit/keys" {
  capabilities = ["list"]
}
# read the key's versions (never its material)
path "transit/keys/+" {
  capabilities = ["read"]
}
# a new key version
path "transit/keys/+/rotate" {
  capabilities = ["update"]
}
# platform-database (database on database)
# list the connections ("*")
path "database/config" {
  capabilities = ["list"]
}
# a new root password only Vault knows
path "database/rotate-root/+" {
  capabilities = ["update"]
}
# list the static roles ("*")
path "database/static-roles" {
  capabilities = ["list"]
}
# the role's last rotation time (never its password)
path "database/static-roles/+" {
  capabilities = ["read"]
}
# a new password for the role's database user
path "database/rotate-role/+" {
  capabilities = ["update"]
}
# platform-pki (pki on pki)
# every certificate the mount issued
path "pki/certs" {
  capabilities = ["list"]
}
# a certificate (public) and whether it is revoked
path "pki/cert/+" {
  capabilities = ["read"]
}
# revoke every certificate but the new ones
path "pki/revoke" {
  capabilities = ["update"]
}
# issue the new certificate
path "pki/issue/smtp-relay" {
  capabilities = ["update"]
}
# keep the new certificate and its key
path "secret/data/pki-certs/smtp-relay" {
  capabilities = ["create", "update"]
}
# which write the kept certificate came from (never its value)
path "secret/subkeys/pki-certs/smtp-relay" {
  capabilities = ["read"]
}
# platform-secrets (kv on secret)
# walk platform/**
path "secret/metadata/platform/*" {
  capabilities = ["list"]
}
# field names and write ids of platform/** (never a value)
path "secret/subkeys/platform/*" {
  capabilities = ["read"]
}
# new values of the listed fields of platform/**
path "secret/data/platform/*" {
  capabilities = ["patch"]
}
