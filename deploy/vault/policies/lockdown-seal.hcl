# lockdown-seal: the only power of containment's seal token.
# sys/seal needs sudo; nothing else is granted but its own token's lookup
# and renewal, so a leaked seal token can stop Vault but read nothing.
# sys/seal-status and sys/health need no token.
path "sys/seal" {
  capabilities = ["update", "sudo"]
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
