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
