package app_test

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"path/filepath"
	"sort"
	"testing"
	"time"

	vault "github.com/hashicorp/vault/api"

	"github.com/lockdown/lockdown/pkg/events"
	"github.com/lockdown/lockdown/pkg/platform/vaulttoken"
	"github.com/lockdown/lockdown/services/containment/internal/app"
	"github.com/lockdown/lockdown/services/containment/internal/recovery"
	"github.com/lockdown/lockdown/testkit/localstack"
)

// BenchmarkContainmentLatency measures, on the real local stack, the time
// from a breach event published by the SIEM user to every Vault node
// confirmed sealed (the confirmation time containment records in
// vault.sealed), beside the bare latency of sys/seal plus one
// sys/seal-status read measured in the same run, interleaved so both see
// the same machine. Run it with -benchtime=30x (make bench): b.N is the
// number of incidents. Vault is unsealed between incidents, and each
// incident is resolved so that the next breach opens a new one. Tracing is
// not exported in this run.
func BenchmarkContainmentLatency(b *testing.B) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	s := localstack.StartTest(b, ctx, localstack.Options{NATS: true, NATSAuth: true, Postgres: true, Vault: true})
	c := startContainment(b, s, nil, nil, nil, nil)
	defer c.stop()
	siem, _ := connectAs(b, s, events.UserSIEM)
	// The baseline seals with the same seal-only token containment uses.
	root, err := s.Vault.Client()
	if err != nil {
		b.Fatal(err)
	}
	root.SetToken(s.Vault.SealToken)
	var bare, lockdown, beforeSeal []time.Duration
	// quiet brings Vault to the same state before every measured seal:
	// unsealed, active, no incident open, then a random pause of 1–1.5 s.
	// Vault completes a seal on an internal cycle of about half a second,
	// so a seal's latency depends on when in that cycle it arrives; the
	// random pause spreads both measurements evenly over the cycle instead
	// of pinning each to one phase.
	quiet := func(incidentID string) {
		unsealActive(b, ctx, s)
		if incidentID != "" {
			waitEvent(b, s, events.VaultUnsealed, 30*time.Second, func(d events.VaultUnsealedData) bool { return d.IncidentID == incidentID })
			resolveOpen(b, s)
		}
		time.Sleep(time.Second + rand.N(500*time.Millisecond))
	}
	quiet("")
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		// Baseline: seal through the API and read the status once.
		start := time.Now()
		if err := root.Sys().SealWithContext(ctx); err != nil {
			b.Fatal(err)
		}
		if st, err := root.Sys().SealStatusWithContext(ctx); err != nil || !st.Sealed {
			b.Fatalf("baseline not sealed: %v", err)
		}
		bare = append(bare, time.Since(start))
		quiet("")

		// Lockdown: breach published → every node confirmed sealed.
		ev := newBreach(b, fmt.Sprintf("benchmark incident %d", i))
		published := time.Now()
		publishAsSIEM(b, siem, ev, nil)
		_, opened := waitEvent(b, s, events.IncidentOpened, 30*time.Second, func(d events.IncidentOpenedData) bool { return d.BreachEventID == ev.ID() })
		_, sealedData := waitEvent(b, s, events.VaultSealed, 30*time.Second, func(d events.VaultSealedData) bool { return d.IncidentID == opened.IncidentID })
		var last time.Time
		for _, n := range sealedData.Nodes {
			if n.ConfirmedAt.After(last) {
				last = n.ConfirmedAt
			}
		}
		lockdown = append(lockdown, last.Sub(published))
		beforeSeal = append(beforeSeal, sealedData.Nodes[0].RequestedAt.Sub(published))
		quiet(opened.IncidentID)
	}
	b.StopTimer()

	report(b, "bare_seal", bare)
	report(b, "breach_to_sealed", lockdown)
	report(b, "breach_to_seal_request", beforeSeal)
	b.Logf("%d incidents; overhead over bare seal: p50 %+.1f ms, p99 %+.1f ms", b.N,
		ms(pct(lockdown, 50)-pct(bare, 50)), ms(pct(lockdown, 99)-pct(bare, 99)))
}

func unsealActive(b *testing.B, ctx context.Context, s *localstack.Stack) {
	b.Helper()
	if err := s.Vault.Unseal(ctx); err != nil {
		b.Fatal(err)
	}
	c, _ := s.Vault.Client()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if h, err := c.Sys().HealthWithContext(ctx); err == nil && !h.Sealed && !h.Standby {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	b.Fatal("vault did not become active after unseal")
}

func report(b *testing.B, name string, d []time.Duration) {
	b.ReportMetric(ms(pct(d, 50)), name+"_p50_ms")
	b.ReportMetric(ms(pct(d, 95)), name+"_p95_ms")
	b.ReportMetric(ms(pct(d, 99)), name+"_p99_ms")
	b.Logf("%-17s p50 %7.1f ms  p95 %7.1f ms  p99 %7.1f ms  (n=%d)", name, ms(pct(d, 50)), ms(pct(d, 95)), ms(pct(d, 99)), len(d))
}

// pct is the nearest-rank percentile.
func pct(d []time.Duration, p int) time.Duration {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	rank := (p*len(s) + 99) / 100
	return s[max(rank-1, 0)]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// BenchmarkRevocation measures phase 4 on the real Vault with one live
// token per tenant (a platform client each), at 100 and 10,000 tenants:
// the whole revocation as containment runs it (reconciliation of Vault's
// security configuration, Lockdown's tokens replaced and verified, the
// sweep to a fixpoint, keyring rotation) beside, in the same run, the
// bare sweep the revocation used to be (one listing, every unknown token
// revoked). The tokens are made again before each measurement. Run it
// with -benchtime=1x (make bench).
func BenchmarkRevocation(b *testing.B) {
	for _, tenants := range []int{100, 10000} {
		b.Run(fmt.Sprintf("tenants=%d", tenants), func(b *testing.B) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
			defer cancel()
			s := localstack.StartTest(b, ctx, localstack.Options{Vault: true})
			root, err := s.Vault.Client()
			if err != nil {
				b.Fatal(err)
			}
			rootRoot, err := localstack.RepoRoot()
			if err != nil {
				b.Fatal(err)
			}
			cfg := &app.Config{VaultAddrs: []string{s.Vault.Addr}, VaultSealTokenFile: s.Vault.SealFile, VaultRecoveryTokenFile: s.Vault.RecoveryFile,
				RotatorTokenFile: s.Vault.RotatorFile, VaultTimeout: 30 * time.Second, DisableAuth: []string{"approle", "jwt"}, BreakGlass: []string{s.Vault.RootAccessor},
				AuthDir: filepath.Join(rootRoot, "deploy", "vault", "auth"), VaultBaseline: s.Vault.BaselineFile,
				VaultPolicyDir: filepath.Join(rootRoot, "deploy", "vault", "policies"), RekeyShares: 5, RekeyThreshold: 3}
			va, err := cfg.VaultAdapters()
			if err != nil {
				b.Fatal(err)
			}
			rc, err := cfg.RecoveryConfig()
			if err != nil {
				b.Fatal(err)
			}
			rc.OwnTokens = va.Own
			rec := recovery.New(rc, va.Admin, nil, slog.New(slog.DiscardHandler))
			mint := func() {
				b.StopTimer()
				defer b.StartTimer()
				for i := range tenants {
					if _, err := root.Auth().Token().CreateOrphanWithContext(ctx, &vault.TokenCreateRequest{Policies: []string{"default"},
						DisplayName: fmt.Sprintf("tenant-%05d", i), TTL: "1h"}); err != nil {
						b.Fatal(err)
					}
				}
			}
			var bare, full time.Duration
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				mint()
				start := time.Now()
				// The revocation as it was: one listing, one pass.
				list, err := root.Logical().ListWithContext(ctx, "auth/token/accessors")
				if err != nil {
					b.Fatal(err)
				}
				keep := map[string]bool{s.Vault.RootAccessor: true}
				for _, f := range []string{s.Vault.SealFile, s.Vault.RecoveryFile, s.Vault.RotatorFile} {
					src, err := vaulttoken.Open("", f)
					if err != nil {
						b.Fatal(err)
					}
					info, err := va.Admin.LookupToken(ctx, src.Token())
					if err != nil {
						b.Fatal(err)
					}
					keep[info.Accessor] = true
				}
				for _, k := range list.Data["keys"].([]any) {
					if acc := k.(string); !keep[acc] {
						if err := root.Auth().Token().RevokeAccessorWithContext(ctx, acc); err != nil {
							b.Fatal(err)
						}
					}
				}
				bare += time.Since(start)
				mint()
				start = time.Now()
				revoked, _, err := rec.Revoke(ctx, fmt.Sprintf("bench-%d", i), events.AccessRevokedData{}, nil)
				if err != nil {
					b.Fatal(err)
				}
				full += time.Since(start)
				if revoked.TokensRevoked < tenants {
					b.Fatalf("revoked %d tokens, want at least %d", revoked.TokensRevoked, tenants)
				}
			}
			b.ReportMetric(bare.Seconds()/float64(b.N), "bare_sweep_s")
			b.ReportMetric(full.Seconds()/float64(b.N), "revocation_s")
			b.ReportMetric(0, "ns/op")
		})
	}
}
