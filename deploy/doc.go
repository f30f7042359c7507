// Package deploy holds no code: its tests check the deployment files
// beside them — docker-compose.yml, deploy/k8s, the Dockerfiles and
// deploy/compose/vault-init.sh — against the configuration the services
// actually read (docs/config, generated from their config structs) and
// against the event catalog (NATS users, streams, consumers). There is no
// Docker engine or cluster on the project's machines, so this is how the
// files stay true.
package deploy
