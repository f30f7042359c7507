# Vault for docker compose: file storage in a volume, a file audit device
# written by vault-init.sh to /vault/logs (the assessor follows it).
# Production Vaults serve TLS; this one is for a single host's loopback.
storage "file" {
  path = "/vault/file"
}
listener "tcp" {
  address     = "0.0.0.0:8200"
  tls_disable = true
}
api_addr      = "http://vault:8200"
disable_mlock = true
ui            = false
