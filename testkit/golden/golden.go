// Package golden checks generated files that are committed (a policy, an
// SQL script) against what the code makes of them, for tests run with
// -update to rewrite them.
package golden

import (
	"os"
	"testing"
)

// Check fails t when file differs from want, naming the command that
// regenerates it; with update it first writes want to file.
func Check(t testing.TB, file, want string, update bool, regenerate string) {
	t.Helper()
	if update {
		if err := os.WriteFile(file, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != want {
		t.Fatalf("%s is out of date: run %s", file, regenerate)
	}
}
