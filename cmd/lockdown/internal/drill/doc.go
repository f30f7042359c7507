// Package drill is lockdown-drill: Lockdown's main job end to end on a
// local stack it starts (testkit/localstack) or on running servers
// (--existing). It seeds tenants and the platform's credentials, checks
// with the plan that the catalogue covers them, plays an intruder, raises
// the breach as the SIEM, plays the key holders, follows the incident
// through the read model, and verifies the outcome in Vault, DNS,
// PostgreSQL, Mailpit and Jaeger. What it shares with the operator's CLI
// (flags, output, the read model, the plan, the console) it takes from
// package cli.
package drill
