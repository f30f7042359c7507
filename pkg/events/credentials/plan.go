package credentials

import "time"

// Plan is `lockdown plan`'s answer: what an incident would do to Vault now,
// read from metadata and names only (never a secret value), and what it
// would leave in place. The operator keeps the last ones in the
// LOCKDOWN_PLANS bucket, where the console shows them.
type Plan struct {
	At    time.Time `json:"at"`
	Vault string    `json:"vault"`
	// Coverage counts the credentials per kind and lists the gaps.
	Coverage
	// AuthMounts are the auth methods disabled on unseal (their tokens
	// and roles with them).
	AuthMounts []string `json:"auth_mounts"`
	// Tokens is how many token accessors Vault lists (revoked on unseal
	// but Lockdown's own and the break-glass list); -1 when the plan's
	// token may not list them (sudo on auth/token/accessors).
	Tokens int `json:"tokens"`
	// UndeclaredMounts are the secrets mounts the baseline does not
	// declare: the revocation disables them, and their data with them.
	UndeclaredMounts []string `json:"undeclared_mounts"`
	// Notes say what the plan could not read.
	Notes []string `json:"notes,omitempty"`
}

// Covered says whether nothing Vault holds is left out.
func (p Plan) Covered() bool { return len(p.Uncovered) == 0 }
