// Package cli implements the lockdown commands. Each command parses its own
// flags (with LOCKDOWN_* environment defaults), prints human-readable text
// or, with --json, one JSON document, and returns an exit code scripts can
// trust: 0 success, 1 failure, 2 bad usage.
package cli

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
)

// Exit codes.
const (
	ExitOK      = 0
	ExitFailure = 1
	ExitUsage   = 2
)

type command struct {
	summary string
	run     func(ctx context.Context, args []string, out, errOut io.Writer) int
}

func commands() map[string]command {
	return map[string]command{
		"trigger":   {"publish a breach event exactly as a SIEM would", runTrigger},
		"drill":     {"run a whole incident on a disposable local stack: intruder, breach, key holders, rotation, notification, report, checks", runDrill},
		"incidents": {"list incidents with phase and age", runIncidents},
		"status":    {"show an incident: phases against targets, seals, the unseal gate, the rekey ceremony, rotation and notification progress", runStatus},
		"report":    {"print the post-incident report (Markdown or JSON)", runReport},
		"console":   {"serve the incident console for the room: live incident pages, the report (read-only; 127.0.0.1:8090 by default)", runConsole},
		"dlq":       {"list dead letters with their reasons, or replay one after a fix", runDLQ},
		"confirm":   {"seal now for an incident whose breach was not allowed to seal by itself (a severity or Vault cluster outside LOCKDOWN_AUTO_SEAL_*)", runConfirm},
		"resume":    {"drive a stuck incident now: containment retries its step and re-announces it to the services waiting on it", runResume},
		"abort":     {"close an incident as failed, with a reason in its report (the next breach opens a new incident)", runAbort},
		"install":   {"provision NATS streams and durable consumers with the admin identity (services may not create them)", runInstall},
		"retry":     {"rotate again the tenants whose rotation failed (or --tenant one) once the cause is mended; corrected totals reach the report", runRetry},
		"review":    {"record the post-incident review (root cause, lessons learned, preventive measures; --final ends it), by flags or in $EDITOR with --edit; the report is regenerated", runReview},
	}
}

// Main dispatches to a command.
func Main(ctx context.Context, args []string, out, errOut io.Writer) int {
	cmds := commands()
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(errOut, cmds)
		if len(args) == 0 {
			return ExitUsage
		}
		return ExitOK
	}
	c, ok := cmds[args[0]]
	if !ok {
		fmt.Fprintf(errOut, "lockdown: unknown command %q\n\n", args[0])
		usage(errOut, cmds)
		return ExitUsage
	}
	return c.run(ctx, args[1:], out, errOut)
}

func usage(w io.Writer, cmds map[string]command) {
	fmt.Fprintln(w, "usage: lockdown <command> [flags]\n\ncommands:")
	names := make([]string, 0, len(cmds))
	for n := range cmds {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-10s %s\n", n, cmds[n].summary)
	}
	fmt.Fprintln(w, "\nRun 'lockdown <command> -h' for its flags.")
}

// newFlags returns a flag set that reports errors instead of exiting.
func newFlags(name string, errOut io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("lockdown "+name, flag.ContinueOnError)
	fs.SetOutput(errOut)
	return fs
}

// parse parses flags; it returns an exit code and false when the command
// must stop (help asked, or bad usage).
func parse(fs *flag.FlagSet, args []string) (int, bool) {
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return ExitOK, false
		}
		return ExitUsage, false
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(fs.Output(), "%s: unexpected arguments %v\n", fs.Name(), fs.Args())
		return ExitUsage, false
	}
	return 0, true
}

// parseWithID parses a command whose one positional argument (an id)
// comes first, with flags before or after it.
func parseWithID(fs *flag.FlagSet, args []string, usage string, errOut io.Writer) (string, int, bool) {
	var id string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		id, args = args[0], args[1:]
	}
	if code, ok := parse(fs, args); !ok {
		return "", code, false
	}
	if id == "" {
		fmt.Fprintln(errOut, usage)
		return "", ExitUsage, false
	}
	return id, 0, true
}

// envOr reads LOCKDOWN_<key> with a default, so flags default from the
// environment like the services' configuration.
func envOr(key, def string) string {
	if v, ok := os.LookupEnv("LOCKDOWN_" + key); ok {
		return v
	}
	return def
}

// printJSON writes v as indented JSON.
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// listFlag collects a repeatable string flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }
