package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	vault "github.com/hashicorp/vault/api"

	"github.com/lockdown/lockdown/pkg/events"
	"github.com/lockdown/lockdown/pkg/events/credentials"
	"github.com/lockdown/lockdown/pkg/platform/stream"
	"github.com/lockdown/lockdown/pkg/platform/vaultclient"
	"github.com/lockdown/lockdown/pkg/platform/vaultdecl"
)

// runPlan is `lockdown plan`: a dry run against the live Vault. It lists
// (LIST, sys/mounts, sys/auth — never a read of a secret's data) and tells
// what an incident would do now: per credential kind how many would be
// rotated or destroyed, how many tokens and auth mounts revoked, which
// secrets mounts disabled, and every secret, key, role or mount that no
// catalogue entry covers. Exit 1 when something is not covered.
func runPlan(ctx context.Context, args []string, out, errOut io.Writer) int {
	fs := NewFlags("plan", errOut)
	addr := fs.String("vault-addr", EnvOr("VAULT_ADDR", os.Getenv("VAULT_ADDR")), "Vault's address (LOCKDOWN_VAULT_ADDR, else VAULT_ADDR); the token is VAULT_TOKEN (a token that may list, see docs/operations.md)")
	catFile := fs.String("catalogue", EnvOr("ROTATION_CATALOGUE", "deploy/rotation/catalogue.json"), "the rotation catalogue (LOCKDOWN_ROTATION_CATALOGUE)")
	baseFile := fs.String("baseline", EnvOr("VAULT_BASELINE", "deploy/vault/baseline.json"), "the declaration of Vault's security configuration (LOCKDOWN_VAULT_BASELINE)")
	kvMount := fs.String("kv-mount", EnvOr("KV_MOUNT", "secret"), "the KV v2 mount of the tenants' secrets (LOCKDOWN_KV_MOUNT)")
	disable := fs.String("disable-auth", EnvOr("DISABLE_AUTH", "approle,jwt"), "auth mounts disabled on unseal, comma-separated (containment's LOCKDOWN_DISABLE_AUTH)")
	timeout := fs.Duration("timeout", 10*time.Minute, "give up after this long")
	asJSON := fs.Bool("json", false, "print the plan as JSON")
	nf := addNATSFlags(fs, events.UserOperator)
	keep := fs.Bool("keep", os.Getenv("LOCKDOWN_NATS_PASSWORD") != "", "keep the plan in NATS (LOCKDOWN_PLANS) for the console and the reports' not-covered column; on when LOCKDOWN_NATS_PASSWORD is set")
	if code, ok := Parse(fs, args); !ok {
		return code
	}
	token := os.Getenv("VAULT_TOKEN")
	var problems []string
	if *addr == "" {
		problems = append(problems, "--vault-addr (or VAULT_ADDR) is required")
	}
	if token == "" {
		problems = append(problems, "VAULT_TOKEN is required")
	}
	cat, err := credentials.Load(*catFile)
	if err != nil {
		problems = append(problems, fmt.Sprintf("--catalogue: %v", err))
	}
	baseline, err := vaultdecl.Load(*baseFile)
	if err != nil {
		problems = append(problems, fmt.Sprintf("--baseline: %v", err))
	}
	if len(problems) > 0 {
		Writef(errOut, "lockdown plan: %s\n", strings.Join(problems, "; "))
		return ExitUsage
	}
	c, err := vaultclient.New(vaultclient.Options{Address: *addr, Token: token, Timeout: time.Minute, MaxRetries: 2})
	if err != nil {
		Writef(errOut, "lockdown plan: %v\n", err)
		return ExitFailure
	}
	vctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	plan, err := MakePlan(vctx, c, cat, baseline, *kvMount, splitList(*disable))
	if err != nil {
		Writef(errOut, "lockdown plan: %v\n", err)
		return ExitFailure
	}
	plan.Vault = *addr
	if *keep {
		// Kept for the console and the reports; a plan not kept is still
		// the answer printed below.
		if err := keepPlan(ctx, nf, plan); err != nil {
			Writef(errOut, "lockdown plan: not kept in NATS: %v\n", err)
		}
	}
	if *asJSON {
		if err := PrintJSON(out, plan); err != nil {
			return ExitFailure
		}
	} else {
		printPlan(out, plan)
	}
	if !plan.Covered() {
		return ExitFailure
	}
	return ExitOK
}

// keepPlan writes the plan to the LOCKDOWN_PLANS bucket as the operator.
func keepPlan(ctx context.Context, nf natsFlags, p credentials.Plan) error {
	cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	conn, err := nf.connect(cctx)
	if err != nil {
		return err
	}
	defer CloseNATS(conn)
	return conn.Explain(stream.PutPlan(cctx, conn.JS, p))
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// MakePlan lists the live Vault and matches it against the catalogue.
func MakePlan(ctx context.Context, c *vault.Client, cat *credentials.Catalogue, baseline vaultdecl.Baseline, kvMount string, disableAuth []string) (credentials.Plan, error) {
	plan := credentials.Plan{At: time.Now().UTC(), AuthMounts: []string{}, UndeclaredMounts: []string{}}
	mounts, err := c.Sys().ListMountsWithContext(ctx)
	if err != nil {
		return plan, fmt.Errorf("sys/mounts: %w", err)
	}
	estate := credentials.Estate{TenantMount: kvMount}
	for _, path := range slices.Sorted(maps.Keys(mounts)) {
		m := mounts[path]
		name := strings.TrimSuffix(path, "/")
		if slices.Contains(vaultdecl.VaultSecretsMounts(), name) {
			continue
		}
		if !slices.Contains(baseline.SecretsMounts, name) {
			plan.UndeclaredMounts = append(plan.UndeclaredMounts, name)
		}
		lm := credentials.Mount{Path: name, Type: m.Type}
		if m.Type == "kv" && m.Options["version"] != "2" {
			lm.Type = "kv-v1" // no kind rotates a KV version 1 mount
		}
		if lm.Items, err = items(ctx, c, name, lm.Type); err != nil {
			return plan, err
		}
		estate.Mounts = append(estate.Mounts, lm)
	}
	plan.Coverage = cat.Coverage(estate)
	auths, err := c.Sys().ListAuthWithContext(ctx)
	if err != nil {
		return plan, fmt.Errorf("sys/auth: %w", err)
	}
	for path := range auths {
		if name := strings.TrimSuffix(path, "/"); slices.Contains(disableAuth, name) {
			plan.AuthMounts = append(plan.AuthMounts, name)
		}
	}
	slices.Sort(plan.AuthMounts)
	plan.Tokens = -1
	if s, err := c.Logical().ListWithContext(ctx, "auth/token/accessors"); err == nil && s != nil {
		keys, _ := s.Data["keys"].([]any)
		plan.Tokens = len(keys)
	} else {
		plan.Notes = append(plan.Notes, "tokens not counted: the plan's token may not list auth/token/accessors (sudo)")
	}
	return plan, nil
}

// items lists what a mount holds that a kind may rotate — names only.
func items(ctx context.Context, c *vault.Client, mount, engine string) ([]string, error) {
	list := func(path string) ([]string, error) {
		s, err := c.Logical().ListWithContext(ctx, path)
		var re *vault.ResponseError
		if errors.As(err, &re) && re.StatusCode == http.StatusNotFound {
			return nil, nil
		}
		if err != nil || s == nil {
			return nil, err
		}
		raw, _ := s.Data["keys"].([]any)
		out := make([]string, 0, len(raw))
		for _, r := range raw {
			if k, ok := r.(string); ok {
				out = append(out, k)
			}
		}
		return out, nil
	}
	if engine == "kv" {
		return walkKV(ctx, list, mount)
	}
	var out []string
	for _, folder := range credentials.EngineLists(engine) {
		names, err := list(mount + "/" + folder)
		if err != nil {
			return nil, err
		}
		for _, n := range names {
			out = append(out, folder+"/"+n)
		}
	}
	return out, nil
}

// maxPlanSecrets bounds one mount's walk.
const maxPlanSecrets = 2_000_000

// walkKV lists every secret of a KV v2 mount through its metadata, eight
// folders at a time.
func walkKV(ctx context.Context, list func(string) ([]string, error), mount string) ([]string, error) {
	var (
		mu      sync.Mutex
		out     []string
		firstEr error
		wg      sync.WaitGroup
	)
	sem := make(chan struct{}, 8)
	var visit func(folder string)
	visit = func(folder string) {
		defer wg.Done()
		sem <- struct{}{}
		keys, err := list(mount + "/metadata/" + folder)
		<-sem
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			if firstEr == nil {
				firstEr = fmt.Errorf("list %s/metadata/%s: %w", mount, folder, err)
			}
			return
		}
		for _, k := range keys {
			if strings.HasSuffix(k, "/") {
				wg.Add(1)
				go visit(folder + k)
				continue
			}
			if len(out) >= maxPlanSecrets {
				if firstEr == nil {
					firstEr = fmt.Errorf("mount %s holds more than %d secrets: the plan stops", mount, maxPlanSecrets)
				}
				return
			}
			out = append(out, folder+k)
		}
	}
	wg.Add(1)
	go visit("")
	wg.Wait()
	slices.Sort(out)
	return out, firstEr
}

// printPlan writes the plan for people.
func printPlan(out io.Writer, p credentials.Plan) {
	out = TerminalSafe(out) // names come from Vault: no control character reaches the terminal
	Writef(out, "Plan of an incident now, against %s (%s)\n\n", p.Vault, p.At.Format(time.RFC3339))
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	Writeln(tw, "KIND\tSCOPE\tCREDENTIALS\tDOES")
	for _, k := range p.Kinds {
		info, _ := credentials.Of(k.Kind)
		does := "rotated"
		if info.Destroys {
			does = "destroyed"
		}
		Writef(tw, "%s\t%s\t%d\t%s\n", k.Title, k.Scope, k.Count, does)
	}
	flushTable(tw)
	Writef(out, "\ntenants: %d\n", p.Tenants)
	for _, name := range slices.Sorted(maps.Keys(p.Entries)) {
		Writef(out, "catalogue entry %s: %d\n", name, p.Entries[name])
	}
	tokens := fmt.Sprint(p.Tokens)
	if p.Tokens < 0 {
		tokens = "unknown"
	}
	Writef(out, "tokens revoked on unseal (but Lockdown's own and the break-glass list): %s\n", tokens)
	Writef(out, "auth mounts disabled on unseal: %s\n", orNone(p.AuthMounts))
	Writef(out, "secrets mounts the baseline does not declare (disabled on unseal, with their data): %s\n", orNone(p.UndeclaredMounts))
	for _, n := range p.Notes {
		Writef(out, "note: %s\n", n)
	}
	if p.Covered() {
		Writeln(out, "\nEvery credential Vault holds is covered.")
		return
	}
	Writef(out, "\nNOT COVERED (%d): nothing would rotate these — add a catalogue entry or remove them\n", len(p.Uncovered))
	for _, g := range p.Uncovered {
		item := g.Item
		if item == "" {
			item = "(whole mount)"
		}
		Writef(out, "  %s\t%s\t%s: %s\n", g.Mount, g.Type, item, g.Why)
	}
}

func orNone(list []string) string {
	if len(list) == 0 {
		return "none"
	}
	return strings.Join(list, ", ")
}
