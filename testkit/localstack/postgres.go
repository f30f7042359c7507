package localstack

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/lockdown/lockdown/pkg/platform/pgroles"
)

// Postgres is a fresh PostgreSQL cluster with a `lockdown` database.
type Postgres struct {
	// URL is a pgx connection string for the lockdown database, with the
	// generated password: hand it to processes, never print it.
	URL  string
	Port int

	bin   string
	args  []string
	cred  *syscall.Credential
	admin string
	proc  *process
	// roles are the login roles of pkg/platform/pgroles (one per service,
	// the CLI's) with their generated passwords.
	roles map[string]string
}

// RoleURL is the connection string of a login role of pkg/platform/pgroles
// (a service's name): what a deployment hands each
// service. It is URL for any other name.
func (p *Postgres) RoleURL(role string) string {
	pw, ok := p.roles[role]
	if !ok {
		return p.URL
	}
	return pgURL(role, pw, p.Port, postgresDB)
}

// postgresUser owns the cluster; postgresDB is the database services use.
const (
	postgresUser = "lockdown"
	postgresDB   = "lockdown"
)

func (s *Stack) startPostgres(ctx context.Context) error {
	initdb, err := pgTool("initdb")
	if err != nil {
		return err
	}
	server, err := pgTool("postgres")
	if err != nil {
		return err
	}
	cred, err := postgresCredential()
	if err != nil {
		return err
	}
	ports, err := freePorts(1)
	if err != nil {
		return err
	}
	dir := filepath.Join(s.Dir, "postgres")
	data, sock := filepath.Join(dir, "data"), filepath.Join(dir, "sock")
	for _, d := range []string{dir, sock} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return err
		}
	}
	password := randomHex(24)
	pwfile := filepath.Join(dir, "pwfile")
	if err := os.WriteFile(pwfile, []byte(password+"\n"), 0o600); err != nil {
		return err
	}
	if cred != nil {
		for _, p := range []string{dir, sock, pwfile} {
			if err := os.Chown(p, int(cred.Uid), int(cred.Gid)); err != nil {
				return err
			}
		}
	}
	cmd := exec.CommandContext(ctx, initdb, "-D", data, "-U", postgresUser, "--pwfile", pwfile,
		"--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--no-sync", "--locale=C")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGKILL}
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("initdb: %w\n%s", err, out)
	}
	_ = os.Remove(pwfile) // best effort: the stack's directory goes at Close
	// fsync off: the cluster is disposable, and tests should measure
	// Lockdown, not the disk.
	pg := &Postgres{URL: pgURL(postgresUser, password, ports[0], postgresDB), Port: ports[0], bin: server, cred: cred, admin: pgURL(postgresUser, password, ports[0], "postgres"),
		args: []string{"-D", data, "-p", strconv.Itoa(ports[0]),
			"-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=" + sock,
			"-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
			"-c", "max_connections=200", "-c", "shared_buffers=512MB", "-c", "wal_level=minimal", "-c", "max_wal_senders=0"}}
	s.Postgres = pg
	if err := s.StartPostgres(ctx); err != nil {
		return err
	}
	admin := pg.admin
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	defer func() { _ = conn.Close(ctx) }() // its statements are done (autocommit): nothing to lose
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+postgresDB); err != nil {
		return fmt.Errorf("postgres: create database: %w", err)
	}
	return installRoles(ctx, pg)
}

// installRoles runs the install step of pkg/platform/pgroles on the
// lockdown database, as a deployment does: every service then connects
// with its own role (Env), owning its schema and nothing else.
func installRoles(ctx context.Context, pg *Postgres) error {
	pg.roles = map[string]string{}
	for _, r := range pgroles.Logins() {
		pg.roles[r] = randomHex(16)
	}
	conn, err := pgx.Connect(ctx, pg.URL)
	if err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	defer func() { _ = conn.Close(ctx) }() // its statements are done (autocommit): nothing to lose
	if err := pgroles.Install(ctx, conn, postgresDB, pg.roles); err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	return nil
}

// StopPostgres stops the server as an outage looks to its clients: a
// fast shutdown (SIGINT) drops every connection at once and refuses new
// ones, for tests of a database that is away. Not SIGKILL: the stack runs
// PostgreSQL with synchronous_commit off, and a killed server would lose
// its last commits, which no real deployment does. StartPostgres brings it
// back on the same port with its data.
func (s *Stack) StopPostgres() error {
	p := s.Postgres.proc
	if !p.running() {
		return nil
	}
	_ = syscall.Kill(p.cmd.Process.Pid, syscall.SIGINT)
	select {
	case <-p.exited:
		return nil
	case <-time.After(30 * time.Second):
		return fmt.Errorf("localstack: postgres did not stop within 30s")
	}
}

// StartPostgres starts the server (again, after StopPostgres) and waits
// until it accepts connections.
func (s *Stack) StartPostgres(ctx context.Context) error {
	pg := s.Postgres
	p, err := startProcess("postgres", s.Dir, pg.bin, pg.args, nil, pg.cred)
	if err != nil {
		return err
	}
	s.procs = append(s.procs, p)
	pg.proc = p
	return p.waitReady(ctx, func(ctx context.Context) error {
		conn, err := pgx.Connect(ctx, pg.admin)
		if err != nil {
			return err
		}
		return conn.Close(ctx)
	})
}

func pgURL(user, password string, port int, db string) string {
	u := url.URL{Scheme: "postgres", User: url.UserPassword(user, password),
		Host: "127.0.0.1:" + strconv.Itoa(port), Path: "/" + db, RawQuery: "sslmode=disable"}
	return u.String()
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return hex.EncodeToString(b)
}
