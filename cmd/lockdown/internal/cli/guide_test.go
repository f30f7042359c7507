package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lockdown/lockdown/pkg/events"
	"github.com/lockdown/lockdown/testkit/localstack"
)

// TestGuideNamesWhatExists reads docs/operations.md as an operator does:
// every `lockdown …` command it shows is a command of this CLI, with the
// flags it shows, and every LOCKDOWN_ variable it names is read by a
// service, the CLI or the install steps. A guide that drifted (a dropped
// flag, a renamed variable) fails here instead of on an operator's night.
func TestGuideNamesWhatExists(t *testing.T) {
	root, err := localstack.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	guide, err := os.ReadFile(filepath.Join(root, "docs", "operations.md"))
	if err != nil {
		t.Fatal(err)
	}
	helps := map[string]string{} // command words → its help
	help := func(words []string) (string, bool) {
		key := strings.Join(words, " ")
		if h, ok := helps[key]; ok {
			return h, true
		}
		var out, errOut bytes.Buffer
		if code := Main(context.Background(), append(slices.Clone(words), "--help"), &out, &errOut); code != ExitOK {
			return "", false
		}
		helps[key] = out.String() + errOut.String()
		return helps[key], true
	}
	t.Run("every lockdown command it shows exists, with its flags", func(t *testing.T) {
		for _, m := range regexp.MustCompile("`lockdown ([^`]*)`").FindAllStringSubmatch(string(guide), -1) {
			fields := strings.Fields(m[1])
			var words []string
			for _, f := range fields {
				if strings.HasPrefix(f, "-") || strings.HasPrefix(f, "<") || strings.HasPrefix(f, "[") || len(words) == 2 {
					break
				}
				words = append(words, f)
			}
			h, ok := help(words)
			if !ok && len(words) == 2 { // a command and its argument
				words = words[:1]
				h, ok = help(words)
			}
			if !ok {
				t.Errorf("the guide shows `lockdown %s`: no such command", m[1])
				continue
			}
			for _, f := range fields {
				flag := strings.TrimLeft(strings.Trim(f, "[]"), "-")
				flag, _, _ = strings.Cut(flag, "=")
				if strings.HasPrefix(f, "--") || strings.HasPrefix(f, "[--") {
					if !strings.Contains(h, "-"+flag+" ") && !strings.Contains(h, "-"+flag+"\n") {
						t.Errorf("the guide shows `lockdown %s`: %s has no flag --%s", m[1], strings.Join(words, " "), flag)
					}
				}
			}
		}
	})
	t.Run("every LOCKDOWN_ variable it names is read somewhere", func(t *testing.T) {
		known := map[string]bool{}
		variable := regexp.MustCompile(`LOCKDOWN_[A-Z0-9_]*[A-Z0-9]`)
		configs, err := filepath.Glob(filepath.Join(root, "docs", "config", "*.md"))
		if err != nil || len(configs) == 0 {
			t.Fatalf("no docs/config: %v", err)
		}
		for _, f := range configs {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			for _, v := range variable.FindAllString(string(b), -1) {
				known[v] = true
			}
		}
		for _, h := range helps {
			for _, v := range variable.FindAllString(h, -1) {
				known[v] = true
			}
		}
		// The install steps, the servers and the local stack read these (deploy/, pkg/events, testkit).
		for _, dir := range []string{"deploy", "pkg", "cmd", "services", "testkit"} {
			_ = filepath.WalkDir(filepath.Join(root, dir), func(path string, d os.DirEntry, err error) error {
				if err != nil || d.IsDir() || strings.HasSuffix(path, "_test.go") || !slices.Contains([]string{".go", ".sql", ".conf", ".yaml", ".sh"}, filepath.Ext(path)) {
					return nil
				}
				b, err := os.ReadFile(path)
				if err == nil {
					for _, v := range variable.FindAllString(string(b), -1) {
						known[v] = true
					}
				}
				return nil
			})
		}
		var unknown []string
		for _, v := range variable.FindAllString(string(guide), -1) {
			// LOCKDOWN_NATS_PASSWORD_<USER>-style families are named by prefix.
			if !known[v] && !slices.Contains(unknown, v) && !prefixOfKnown(v, known) {
				unknown = append(unknown, v)
			}
		}
		if len(unknown) > 0 {
			t.Errorf("the guide names variables nothing reads: %v", unknown)
		}
	})
}

// prefixOfKnown says whether v is the common prefix of a family of known
// variables (the guide writes LOCKDOWN_NATS_PASSWORD_ for them all).
func prefixOfKnown(v string, known map[string]bool) bool {
	for k := range known {
		if strings.HasPrefix(k, v+"_") {
			return true
		}
	}
	return false
}

// TestGuideInstallSteps follows "Install, in order" of docs/operations.md
// literally: each `… lockdown install …` command it shows is run as
// written, in the guide's order, against real servers — the "…" the
// operator fills in replaced by the servers' addresses and the passwords
// given to them — and must succeed. A command written in a shorthand a
// shell does not understand fails here.
func TestGuideInstallSteps(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	root, err := localstack.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	guide, err := os.ReadFile(filepath.Join(root, "docs", "operations.md"))
	if err != nil {
		t.Fatal(err)
	}
	section := string(guide)
	start := strings.Index(section, "## Install, in order")
	if start < 0 {
		t.Fatal(`docs/operations.md has no "Install, in order"`)
	}
	section = section[start:]
	if end := strings.Index(section[3:], "\n## "); end >= 0 {
		section = section[:end+3]
	}
	var commands []string
	for _, m := range regexp.MustCompile("`([^`]*lockdown install [^`]*)`").FindAllStringSubmatch(section, -1) {
		// A later mention of a command shown whole before ("exit 1
		// naming `lockdown install nats`") names it, it is not a step.
		if !slices.ContainsFunc(commands, func(c string) bool { return strings.HasSuffix(c, m[1]) }) {
			commands = append(commands, m[1])
		}
	}
	if len(commands) < 3 {
		t.Fatalf("the install steps show %d lockdown install commands: %q", len(commands), commands)
	}
	s := localstack.StartTest(t, ctx, localstack.Options{NATS: true, NATSAuth: true, Postgres: true, Vault: true})
	// The operator's shell: where the servers are, and Vault's token for
	// the baseline (the guide's "Vault tokens").
	t.Setenv("LOCKDOWN_NATS_URL", s.NATS.URL)
	t.Setenv("VAULT_ADDR", s.Vault.Addr)
	t.Setenv("VAULT_TOKEN", s.Vault.RootToken)
	t.Chdir(root) // the defaults name the repository's deploy/ folder
	fill := func(name, value string) string {
		if !strings.Contains(value, "…") {
			return value
		}
		switch {
		case name == "LOCKDOWN_NATS_PASSWORD":
			return s.NATS.Password(events.UserAdmin)
		case strings.HasPrefix(name, "LOCKDOWN_POSTGRES_PASSWORD_"):
			return "guide-" + strings.ToLower(strings.TrimPrefix(name, "LOCKDOWN_POSTGRES_PASSWORD_"))
		case strings.HasPrefix(value, "postgres://"):
			return s.Postgres.URL
		}
		t.Fatalf("the guide leaves %q to fill in %s: the test does not know what goes there", value, name)
		return ""
	}
	for _, command := range commands {
		t.Run(command, func(t *testing.T) {
			fields := strings.Fields(command)
			i := 0
			for ; i < len(fields) && fields[i] != "lockdown"; i++ {
				name, value, ok := strings.Cut(fields[i], "=")
				if !ok || !strings.HasPrefix(name, "LOCKDOWN_") {
					t.Fatalf("%q: %q is not a LOCKDOWN_ variable assignment a shell would pass on", command, fields[i])
				}
				t.Setenv(name, fill(name, value))
			}
			if i == len(fields) {
				t.Fatalf("%q runs no lockdown command", command)
			}
			args := fields[i+1:]
			for j, a := range args {
				args[j] = fill(a, a)
			}
			var out, errOut bytes.Buffer
			if code := Main(ctx, args, &out, &errOut); code != ExitOK {
				t.Fatalf("%q: exit %d: %s", command, code, errOut.String())
			}
		})
	}
}
