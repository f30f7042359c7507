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

	"github.com/lockdown/lockdown/pkg/platform/localstack"
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
		// The install steps and the servers read these (deploy/, pkg/events).
		for _, dir := range []string{"deploy", "pkg", "cmd", "services"} {
			_ = filepath.WalkDir(filepath.Join(root, dir), func(path string, d os.DirEntry, err error) error {
				if err != nil || d.IsDir() || strings.HasSuffix(path, "_test.go") || !(strings.HasSuffix(path, ".go") || strings.HasSuffix(path, ".sql") ||
					strings.HasSuffix(path, ".conf") || strings.HasSuffix(path, ".yaml") || strings.HasSuffix(path, ".sh")) {
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
