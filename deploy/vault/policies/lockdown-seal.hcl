# lockdown-seal: the only power of containment's seal token.
# sys/seal needs sudo; nothing else is granted, so a leaked seal token can
# stop Vault but read nothing. sys/seal-status and sys/health need no token.
path "sys/seal" {
  capabilities = ["update", "sudo"]
}
