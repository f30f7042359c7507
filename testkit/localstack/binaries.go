package localstack

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"time"
)

// Environment variables that override where the servers are found.
const (
	// EnvBinDir names the folder holding vault, nats-server, jaeger and
	// mailpit. Default: .bin at the repository root (where `make tools`
	// builds them).
	EnvBinDir = "LOCKDOWN_BIN_DIR"
	// EnvPGBinDir names PostgreSQL's bin folder. Default: the newest
	// /usr/lib/postgresql/*/bin.
	EnvPGBinDir = "LOCKDOWN_PG_BIN_DIR"
)

// binDir finds the tools folder: $LOCKDOWN_BIN_DIR, or .bin at the
// repository root.
func binDir() (string, error) {
	if d := os.Getenv(EnvBinDir); d != "" {
		return d, nil
	}
	root, err := RepoRoot()
	if err != nil {
		return "", fmt.Errorf("%w: %v; set %s", ErrBinaryMissing, err, EnvBinDir)
	}
	return filepath.Join(root, ".bin"), nil
}

// RepoRoot finds the repository (the folder holding go.work) from the
// working directory or, failing that, from $LOCKDOWN_BIN_DIR's parent.
func RepoRoot() (string, error) {
	starts := []string{}
	if wd, err := os.Getwd(); err == nil {
		starts = append(starts, wd)
	}
	if d := os.Getenv(EnvBinDir); d != "" {
		starts = append(starts, d)
	}
	if exe, err := os.Executable(); err == nil {
		starts = append(starts, filepath.Dir(exe))
	}
	for _, start := range starts {
		for dir := start; ; dir = filepath.Dir(dir) {
			if _, err := os.Stat(filepath.Join(dir, "go.work")); err == nil {
				return dir, nil
			}
			if filepath.Dir(dir) == dir {
				break
			}
		}
	}
	return "", fmt.Errorf("no go.work above %v", starts)
}

// tool returns the path of a server built by `make tools`.
func tool(name string) (string, error) {
	dir, err := binDir()
	if err != nil {
		return "", err
	}
	p := filepath.Join(dir, name)
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("%w: %s not found in %s: run `make tools`", ErrBinaryMissing, name, dir)
	}
	return p, nil
}

// Binary returns the path of a program built into the tools folder (the
// servers by `make tools`, Lockdown's own services by `make build`). Tests
// use Service for Lockdown's own.
func Binary(name string) (string, error) { return tool(name) }

// pgTool returns the path of a PostgreSQL server program.
func pgTool(name string) (string, error) {
	dirs := []string{os.Getenv(EnvPGBinDir)}
	if dirs[0] == "" {
		found, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
		sort.Sort(sort.Reverse(sort.StringSlice(found)))
		dirs = found
	}
	for _, d := range dirs {
		p := filepath.Join(d, name)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("%w: PostgreSQL's %s not found (set %s or install the postgresql package: `make tools` does)", ErrBinaryMissing, name, EnvPGBinDir)
}

// PGTool is the path of one of PostgreSQL's programs (psql, for tests of
// the install files operators run with it).
func PGTool(name string) (string, error) { return pgTool(name) }

// EnvServiceDir names the folder holding Lockdown's own services built for
// a test binary by RunWithServices.
const EnvServiceDir = "LOCKDOWN_TEST_SERVICE_DIR"

// BuildServices builds Lockdown's services from the repository's source
// into dir (one `go build`; Go's build cache makes unchanged code a link).
func BuildServices(ctx context.Context, dir string) error {
	root, err := RepoRoot()
	if err != nil {
		return err
	}
	args := []string{"build", "-o", dir + string(filepath.Separator)}
	for _, s := range []string{"containment", "assessor", "rotator", "notifier"} {
		args = append(args, "./services/"+s)
	}
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("build the services: %w\n%s", err, out)
	}
	return nil
}

// RunWithServices is a test binary's TestMain body for tests that start
// Lockdown's services as processes: it builds them from the source the
// tests were compiled with (never a stale .bin), runs the tests and
// removes them. m is the *testing.M.
func RunWithServices(m interface{ Run() int }) int {
	dir, err := os.MkdirTemp("", "lockdown-services-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer func() { _ = os.RemoveAll(dir) }() // best effort: a temporary directory
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	err = BuildServices(ctx, dir)
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := os.Setenv(EnvServiceDir, dir); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
}

// Service returns the path of one of Lockdown's services built for this
// test binary by RunWithServices.
func Service(name string) (string, error) {
	dir := os.Getenv(EnvServiceDir)
	if dir == "" {
		return "", fmt.Errorf("%w: %s: the test binary did not build the services (TestMain: localstack.RunWithServices)", ErrBinaryMissing, name)
	}
	return filepath.Join(dir, name), nil
}

// ServiceDir is the folder of the services RunWithServices built.
func ServiceDir() (string, error) {
	p, err := Service("containment")
	return filepath.Dir(p), err
}
