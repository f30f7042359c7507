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

// binDir finds the tools folder: $LOCKDOWN_BIN_DIR, or .bin beside the
// go.work found walking up from the working directory.
func binDir() (string, error) {
	if d := os.Getenv(EnvBinDir); d != "" {
		return d, nil
	}
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for dir := wd; ; dir = filepath.Dir(dir) {
		if _, err := os.Stat(filepath.Join(dir, "go.work")); err == nil {
			return filepath.Join(dir, ".bin"), nil
		}
		if filepath.Dir(dir) == dir {
			return "", fmt.Errorf("%w: no go.work above %s; set %s", ErrBinaryMissing, wd, EnvBinDir)
		}
	}
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
