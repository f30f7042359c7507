package localstack

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
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
// servers by `make tools`, Lockdown's own services by `make build`).
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
