package pgroles_test

import (
	"flag"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lockdown/lockdown/pkg/platform/pgroles"
	"github.com/lockdown/lockdown/testkit/golden"
)

var update = flag.Bool("update", false, "rewrite deploy/postgres/roles.sql")

// TestPsqlFile keeps deploy/postgres/roles.sql what the package makes of
// it, and checks no statement carries a password of its own.
func TestPsqlFile(t *testing.T) {
	file := filepath.Join("..", "..", "..", "deploy", "postgres", "roles.sql")
	want := pgroles.PsqlFile("lockdown")
	golden.Check(t, file, want, *update, "make docs")
	for _, r := range pgroles.Logins() {
		if !strings.Contains(want, "PASSWORD :'"+r+"_password'") {
			t.Errorf("%s's password is not a psql variable", r)
		}
	}
}

// TestLiteral quotes what would end a literal.
func TestLiteral(t *testing.T) {
	if got := pgroles.Literal("a'b"); got != "'a''b'" {
		t.Fatalf("Literal(a'b) = %s", got)
	}
}
