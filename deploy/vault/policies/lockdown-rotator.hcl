# lockdown-rotator: the rotator's token (phase 6). It writes every tenant's
# new SSH, SMTP and DKIM secrets (check-and-set) and destroys every API key:
# all versions and metadata, since KV v2 "delete" is only a soft delete.
path "secret/data/tenants/*" {
  capabilities = ["create", "update", "read"]
}
path "secret/metadata/tenants/*" {
  capabilities = ["read"]
}
path "secret/metadata/api_keys/*" {
  capabilities = ["list", "read", "delete"]
}
