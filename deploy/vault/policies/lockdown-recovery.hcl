# lockdown-recovery: containment's token for runbook phases 4, 5 and 8
# (revoke access, rekey, restore access). Every Vault call Lockdown makes
# there is listed in docs/operations.md with the capability it needs; this
# policy grants exactly those. The token is a periodic orphan token issued
# at install, so disabling approle and jwt does not revoke it.

# Phase 4: disable the compromised auth methods (and phase 8: enable them).
path "sys/auth" {
  capabilities = ["read"]
}
path "sys/auth/*" {
  capabilities = ["create", "update", "delete", "sudo"]
}

# Phase 4: find and revoke every other token by accessor.
path "auth/token/accessors" {
  capabilities = ["list", "sudo"]
}
path "auth/token/lookup-accessor" {
  capabilities = ["update"]
}
path "auth/token/revoke-accessor" {
  capabilities = ["update"]
}

# Phase 4: revoke leases under the configured prefixes.
path "sys/leases/revoke-prefix/*" {
  capabilities = ["update", "sudo"]
}

# Phase 4: rotate the barrier keyring and read its term.
path "sys/rotate" {
  capabilities = ["update", "sudo"]
}
path "sys/key-status" {
  capabilities = ["read"]
}

# Phase 5: the rekey ceremony. sys/rekey/init, update and verify take no
# token (the shares are the authority); reading and deleting the
# PGP-encrypted backup needs sudo.
path "sys/rekey/backup" {
  capabilities = ["read", "delete", "sudo"]
}
path "sys/rekey-recovery-key/backup" {
  capabilities = ["read", "delete", "sudo"]
}

# Phase 8: re-apply the auth methods' configuration and roles from
# deploy/vault/auth (disabling deleted them).
path "auth/approle/*" {
  capabilities = ["create", "update", "read"]
}
path "auth/jwt/*" {
  capabilities = ["create", "update", "read"]
}
