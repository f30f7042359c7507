package cli_test

import (
	"context"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/lockdown/lockdown/cmd/lockdown/internal/cli"
	"github.com/lockdown/lockdown/pkg/platform/pgroles"
	"github.com/lockdown/lockdown/testkit/localstack"
)

// TestInstallPostgres runs `lockdown install postgres` as an operator
// would, against a real PostgreSQL: every missing password is named, the
// step can run again (new passwords take effect), and no password is
// printed.
func TestInstallPostgres(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s := localstack.StartTest(t, ctx, localstack.Options{Postgres: true})

	t.Run("every missing password is named at once", func(t *testing.T) {
		for _, r := range pgroles.Logins() {
			t.Setenv("LOCKDOWN_POSTGRES_PASSWORD_"+strings.ToUpper(r), "")
		}
		code, _, errOut := run(ctx, "install", "postgres", "--database-url", s.Postgres.URL)
		if code != cli.ExitUsage {
			t.Fatalf("exit %d: %s", code, errOut)
		}
		for _, r := range pgroles.Logins() {
			if !strings.Contains(errOut, "LOCKDOWN_POSTGRES_PASSWORD_"+strings.ToUpper(r)) {
				t.Errorf("%s's password is not named: %s", r, errOut)
			}
		}
	})

	t.Run("the step runs again with new passwords, which then work, and prints none", func(t *testing.T) {
		for _, r := range pgroles.Logins() {
			t.Setenv("LOCKDOWN_POSTGRES_PASSWORD_"+strings.ToUpper(r), "pw-"+r+"-second")
		}
		code, out, errOut := run(ctx, "install", "postgres", "--database-url", s.Postgres.URL)
		if code != cli.ExitOK {
			t.Fatalf("exit %d: %s", code, errOut)
		}
		if strings.Contains(out+errOut, "-second") {
			t.Fatal("a password was printed")
		}
		u, err := url.Parse(s.Postgres.URL)
		if err != nil {
			t.Fatal(err)
		}
		u.User = url.UserPassword("notifier", "pw-notifier-second")
		conn, err := pgx.Connect(ctx, u.String())
		if err != nil {
			t.Fatalf("the notifier's new password does not work: %v", err)
		}
		defer func() { _ = conn.Close(ctx) }()
		if _, err := conn.Exec(ctx, "CREATE TABLE containment.evil (v text)"); err == nil || !strings.Contains(err.Error(), "permission denied") {
			t.Fatalf("the notifier could create a table in containment's schema: %v", err)
		}
	})
}
