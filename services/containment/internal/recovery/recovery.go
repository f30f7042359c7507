// Package recovery is what containment does to Vault after the unseal
// gate: revoke access (phase 4), run the rekey ceremony with the key
// holders (phase 5) and restore access (phase 8). Its operations change
// Vault and return what they did; package engine decides when to run them
// and records their results. It imports no transport: Vault is a port.
package recovery

import (
	"context"
	"log/slog"
	"time"

	"github.com/lockdown/lockdown/pkg/events"
	"github.com/lockdown/lockdown/pkg/platform/failpoint"
)

// Config of the recovery phases.
type Config struct {
	// DisableAuth are the mount paths of the auth methods disabled on
	// unseal (default approle, jwt). Disabling revokes their tokens.
	DisableAuth []string
	// KeepAccessors are Lockdown's own tokens (besides the one in use),
	// issued at install; BreakGlass are the accessors of tokens an
	// organisation keeps for emergencies. Neither is revoked.
	KeepAccessors []string
	BreakGlass    []string
	// LeasePrefixes are revoked with sys/leases/revoke-prefix.
	LeasePrefixes []string
	// Rekey ceremony.
	Shares, Threshold   int
	PGPKeys             []string // base64 binary public keys, one per share
	RequireVerification bool
	Poll                time.Duration
	// Auth are the declarative auth methods re-applied on restore.
	Auth []AuthSpec
	// Baseline is what else Vault may hold: other auth mounts are disabled
	// and other policies deleted on unseal.
	Baseline Baseline
	// OwnTokens are Lockdown's tokens replaced by successors in every
	// revocation, before every other token is revoked; FixedTokens name the
	// ones that cannot be (given in the environment), for the report.
	OwnTokens   []OwnToken
	FixedTokens []string
	// Failpoints are the crash tests' kill points (nil: none).
	Failpoints *failpoint.Set
	// MaxSweeps bounds the listings of one token sweep (default 10).
	MaxSweeps int
	// VerifyRotation is how the rotation's claims are checked in Vault
	// before restore (VerifyAll, VerifyClaimed, VerifyOff); KVMount is the
	// KV v2 mount of the tenants' secrets.
	VerifyRotation, KVMount string
}

// OwnToken is one of Lockdown's own Vault tokens. In every revocation
// containment mints its successor from the token role Role (same policy,
// orphan, periodic) and hands it over to Store before the sweep revokes
// every token but the successors and the break-glass ones: an incident
// leaves no token of Lockdown's that existed before it, so one stolen
// earlier is dead.
type OwnToken struct {
	Name  string // seal, recovery, rotator
	Role  string // lockdown-<name>
	Store TokenStore
}

// TokenStore is where a successor is handed over (vaulttoken.Source: the
// token file, and the clients that use the token).
type TokenStore interface {
	Replace(token string) error
	// Reload reads the token again from where it is kept (another
	// containment process, the leader before a takeover, may have
	// replaced it), and Token is the token the store holds now.
	Reload() (bool, error)
	Token() string
}

// AuthMount is one enabled auth method as sys/auth shows it.
type AuthMount struct {
	Type string
	// MaxLeaseTTL bounds its tokens' lifetime (0: Vault's system maximum).
	MaxLeaseTTL time.Duration
	// AuditNonHMACKeys and Raw as in Mount.
	AuditNonHMACKeys []string
	Raw              string
}

// AuthSpec is one auth method as deploy/vault/auth describes it: its type
// and the writes (relative to auth/<path>/) that configure it and its roles.
type AuthSpec struct {
	Path        string  `json:"-"`
	Type        string  `json:"type"`
	Description string  `json:"description"`
	Writes      []Write `json:"writes"`
}

// Write is one configuration write under auth/<path>/.
type Write struct {
	Path string         `json:"path"`
	Data map[string]any `json:"data"`
}

// RekeyStatus is sys/rekey/init (or rekey-recovery-key) read back.
type RekeyStatus struct {
	Started           bool
	Nonce             string
	T, N, Progress    int
	PGPFingerprints   []string
	VerificationNonce string
}

// VerifyStatus is sys/rekey/verify read back.
type VerifyStatus struct {
	Started  bool
	Nonce    string
	T, N     int
	Progress int
}

// Vault is what recovery needs of Vault. recovery selects the
// rekey-recovery-key endpoints (auto-unseal clusters).
type Vault interface {
	// Follow points the calls that follow at the active node.
	Follow(ctx context.Context) error
	SelfAccessor(ctx context.Context) (string, error)
	// CreateToken mints a token from a token role (auth/token/create/:role).
	CreateToken(ctx context.Context, role string) (token, accessor string, err error)
	AuthMounts(ctx context.Context) (map[string]AuthMount, error) // by path, without the slash
	Policies(ctx context.Context) ([]string, error)
	DeletePolicy(ctx context.Context, name string) error
	DisableAuth(ctx context.Context, path string) error
	EnableAuth(ctx context.Context, path, typ, description string) error
	WriteAuth(ctx context.Context, path string, data map[string]any) error
	TokenAccessors(ctx context.Context) ([]string, error)
	RevokeAccessor(ctx context.Context, accessor string) error
	RevokePrefix(ctx context.Context, prefix string) error
	Rotate(ctx context.Context) error
	KeyTerm(ctx context.Context) (int, error)
	RecoverySeal(ctx context.Context) (bool, error)
	RekeyStatus(ctx context.Context, recovery bool) (RekeyStatus, error)
	RekeyInit(ctx context.Context, recovery bool, shares, threshold int, pgpKeys []string, verify bool) (RekeyStatus, error)
	// RekeyCancel cancels the rekey with this nonce (Vault 1.21 requires the
	// nonce for ten minutes after the rekey started).
	RekeyCancel(ctx context.Context, recovery bool, nonce string) error
	RekeyVerifyStatus(ctx context.Context, recovery bool) (VerifyStatus, error)
	// RekeyBackup returns the nonce of the stored PGP-encrypted backup of
	// the last completed rekey ("" when there is none).
	RekeyBackup(ctx context.Context, recovery bool) (string, error)

	// LookupToken reads a token's own properties with that token
	// (auth/token/lookup-self, granted by each of Lockdown's policies).
	LookupToken(ctx context.Context, token string) (TokenInfo, error)
	// GenerateRootCancel cancels a sys/generate-root attempt in progress
	// (no token needed) and says whether there was one.
	GenerateRootCancel(ctx context.Context) (bool, error)
	// TenantFolders lists the tenants with secrets under mount's tenants/
	// (metadata list); SecretWritten reads when a secret's current version
	// was written (metadata: no value is read), found false when there is
	// none.
	TenantFolders(ctx context.Context, mount string) ([]string, error)
	SecretWritten(ctx context.Context, mount, path string) (written time.Time, found bool, err error)

	SecurityConfig
}

// SecurityConfig is Vault's security configuration as reconcile.go reads
// and mends it. Every definition is returned as Vault shows it (Raw, for
// the evidence) and in the fields the comparison needs.
type SecurityConfig interface {
	AuditDevices(ctx context.Context) (map[string]LiveAuditDevice, error) // by path, without the slash
	DisableAudit(ctx context.Context, path string) error
	AuditedHeaders(ctx context.Context) (map[string]string, error) // name → definition
	DeleteAuditedHeader(ctx context.Context, name string) error
	SecretsMounts(ctx context.Context) (map[string]Mount, error) // by path, without the slash
	DisableSecrets(ctx context.Context, path string) error
	// ClearAuditKeys empties a mount's audit_non_hmac_request_keys and
	// audit_non_hmac_response_keys (auth is true for an auth mount).
	ClearAuditKeys(ctx context.Context, auth bool, path string) error
	Policy(ctx context.Context, name string) (string, error)
	PutPolicy(ctx context.Context, name, text string) error
	TokenRoles(ctx context.Context) ([]string, error)
	TokenRole(ctx context.Context, name string) (map[string]any, error) // nil when absent
	WriteTokenRole(ctx context.Context, name string, data map[string]any) error
	DeleteTokenRole(ctx context.Context, name string) error
	Identities(ctx context.Context, kind string) ([]Identity, error) // kind: entity or group
	DeleteIdentity(ctx context.Context, kind, id string) error
	Plugins(ctx context.Context) ([]Plugin, error) // external (not built-in) plugins only
	DeregisterPlugin(ctx context.Context, p Plugin) error
}

// TokenInfo is what a token's lookup shows of it.
type TokenInfo struct {
	Accessor       string
	Role           string
	Policies       []string
	Orphan         bool
	Renewable      bool
	Period         int // seconds
	ExplicitMaxTTL int // seconds
	NumUses        int
	Type           string
	BoundCIDRs     []string
}

// LiveAuditDevice is one enabled audit device as sys/audit shows it.
type LiveAuditDevice struct {
	Type    string
	Options map[string]string
	Raw     string
}

// Mount is one mount (secrets or auth) as sys/mounts or sys/auth shows it.
type Mount struct {
	Type string
	// AuditNonHMACKeys are the mount's audit_non_hmac_request_keys and
	// audit_non_hmac_response_keys: fields every audit device then writes
	// in clear, the declared ones included.
	AuditNonHMACKeys []string
	Raw              string
}

// Identity is an identity entity or group.
type Identity struct {
	ID, Name string
	Policies []string
	Raw      string
}

// Plugin is one external plugin of the catalog.
type Plugin struct {
	Type, Name, Version string
	Raw                 string
}

// LogStream feeds a witness from Vault's server log until ctx ends.
type LogStream interface {
	Watch(ctx context.Context, w *Witness, log *slog.Logger)
}

// Ceremony phases, as the status shows them.
const (
	CeremonyCollecting = "collecting_current_shares"
	CeremonyVerifying  = "verifying_new_shares"
	CeremonyCompleted  = "completed"
)

// State is one incident's recovery progress, kept by the store.
type State struct {
	IncidentID      string                   `json:"incident_id"`
	AccessRevokedAt time.Time                `json:"access_revoked_at"`
	Revoked         events.AccessRevokedData `json:"revoked"`
	// RevokedRound is the seal round the last revocation followed: a new
	// round (a re-seal) is revoked again after its own unseal.
	RevokedRound int `json:"revoked_round"`
	// Revoking is what the revocation of round RevokingRound is removing
	// from Vault, recorded before the first removal: a run cut short after
	// a removal still reports it.
	Revoking      events.AccessRevokedData `json:"revoking,omitempty"`
	RevokingRound int                      `json:"revoking_round,omitempty"`
	KeptReasons   map[string]int           `json:"kept_reasons,omitempty"`
	// Swept are the stages (after_rekey, before_restore) of round
	// SweptRound already swept and recorded; Sweeping is what a sweep of
	// stage SweepingStage is removing, recorded before the first removal.
	Swept         []string             `json:"swept,omitempty"`
	SweptRound    int                  `json:"swept_round,omitempty"`
	Sweeping      []events.VaultChange `json:"sweeping,omitempty"`
	SweepingStage string               `json:"sweeping_stage,omitempty"`
	// GenerateRootAlarms counts the generate-root attempts cancelled
	// during the ceremony and already announced.
	GenerateRootAlarms int      `json:"generate_root_alarms,omitempty"`
	Ceremony           Ceremony `json:"ceremony"`
	// RotationDone and NotifiedDone mirror the timeline (rotation.completed
	// and notifications.completed recorded) for the status display.
	RotationDone bool      `json:"rotation_done"`
	NotifiedDone bool      `json:"notifications_done"`
	RestoredAt   time.Time `json:"restored_at"`
	// RestoredRound is the seal round after which access was restored: a
	// breach after the restore starts another round, whose revocation
	// disables access again, and access is restored again after it.
	RestoredRound int `json:"restored_round,omitempty"`
	// TraceParent is the incident's trace (W3C traceparent): the ceremony
	// loop continues it.
	TraceParent string `json:"trace_parent,omitempty"`
}

// Ceremony is the rekey ceremony's progress: the nonce key holders pass to
// `vault operator rekey -nonce=…`, and how far they are. No share is ever
// in it.
type Ceremony struct {
	Phase          string    `json:"phase,omitempty"`
	Nonce          string    `json:"nonce,omitempty"`
	RecoveryKeys   bool      `json:"recovery_keys"`
	Threshold      int       `json:"t"`
	Shares         int       `json:"n"`
	Progress       int       `json:"progress"`
	VerifyNonce    string    `json:"verification_nonce,omitempty"`
	VerifyProgress int       `json:"verification_progress"`
	Fingerprints   []string  `json:"pgp_fingerprints,omitempty"`
	StartedAt      time.Time `json:"started_at"`
	CompletedAt    time.Time `json:"completed_at"`
	ConfirmedBy    string    `json:"confirmed_by,omitempty"`
	Restarts       int       `json:"restarts"`
	Note           string    `json:"note,omitempty"`
	// Round is the seal round the ceremony was started in: Vault clears a
	// rekey in progress when it seals, so a new round starts it again.
	Round int `json:"round,omitempty"`
	// Announced is set once unsealkeys.rotated is in the outbox.
	Announced bool `json:"announced,omitempty"`
}
