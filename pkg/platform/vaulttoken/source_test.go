package vaulttoken_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/lockdown/lockdown/pkg/platform/vaulttoken"
	"github.com/lockdown/lockdown/testkit/testwait"
)

func TestSource(t *testing.T) {
	t.Run("a token from the environment is fixed", func(t *testing.T) {
		s, err := vaulttoken.Open("hvs.env", "")
		if err != nil || s.Token() != "hvs.env" || s.Replaceable() {
			t.Fatalf("%v %v", s, err)
		}
		if err := s.Replace("hvs.next"); !errors.Is(err, vaulttoken.ErrFixed) {
			t.Fatalf("replace: %v", err)
		}
	})
	t.Run("nothing configured, an empty file or a file of two tokens is refused", func(t *testing.T) {
		if _, err := vaulttoken.Open("", ""); !errors.Is(err, vaulttoken.ErrNoToken) {
			t.Fatal(err)
		}
		for _, content := range []string{"", "\n", "hvs.a hvs.b\n"} {
			f := tokenFile(t, "t", content)
			if _, err := vaulttoken.Open("", f); !errors.Is(err, vaulttoken.ErrNoToken) {
				t.Fatalf("%q: %v", content, err)
			}
		}
	})
	t.Run("a replacement is written privately, survives a reopen and reaches every listener", func(t *testing.T) {
		f := tokenFile(t, "recovery.token", "hvs.old\n")
		s, err := vaulttoken.Open("hvs.ignored", f)
		if err != nil || s.Token() != "hvs.old" {
			t.Fatalf("the file should win: %v", err)
		}
		var got string
		s.OnChange(func(tok string) { got = tok })
		if err := s.Replace("hvs.new"); err != nil {
			t.Fatal(err)
		}
		if got != "hvs.new" || s.Token() != "hvs.new" {
			t.Fatalf("listener got %q", got)
		}
		fi, err := os.Stat(f)
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("mode %v, %v", fi.Mode(), err)
		}
		again, _ := vaulttoken.Open("", f)
		if again.Token() != "hvs.new" {
			t.Fatal("not durable")
		}
		entries, _ := os.ReadDir(filepath.Dir(f))
		if len(entries) != 1 {
			t.Fatalf("left %d files behind", len(entries))
		}
	})
	t.Run("another process's replacement is picked up by the watch", func(t *testing.T) {
		f := tokenFile(t, "rotator.token", "hvs.old\n")
		reader, _ := vaulttoken.Open("", f)
		writer, _ := vaulttoken.Open("", f)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go reader.Watch(ctx, 10*time.Millisecond)
		if err := writer.Replace("hvs.new"); err != nil {
			t.Fatal(err)
		}
		testwait.For(t, 5*time.Second, "the watch to pick the successor up", func() bool { return reader.Token() == "hvs.new" })
	})
}

// tokenFile writes content to a file of a new temporary directory.
func tokenFile(t *testing.T, name, content string) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(f, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}
