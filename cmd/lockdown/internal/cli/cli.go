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
	"text/tabwriter"

	"github.com/spf13/cobra"
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
		"incidents": {"list incidents with phase and age", runIncidents},
		"status":    {"show an incident: phases against targets, seals, the unseal gate, the rekey ceremony, rotation and notification progress", runStatus},
		"report":    {"print the post-incident report (Markdown or JSON)", runReport},
		"console":   {"serve the incident console for the room: live incident pages, the report (read-only; 127.0.0.1:8090 by default)", runConsole},
		"dlq":       {"list dead letters with their reasons, or replay one after a fix", runDLQ},
		"confirm":   {"seal now for an incident whose breach was not allowed to seal by itself (a severity or Vault cluster outside LOCKDOWN_AUTO_SEAL_*)", runConfirm},
		"resume":    {"drive a stuck incident now: containment retries its step and re-announces it to the services waiting on it", runResume},
		"abort":     {"close an incident as failed, with a reason in its report (the next breach opens a new incident)", runAbort},
		"install":   {"install nats: provision the streams, durable consumers and read-model buckets with the admin identity (services may not create them); install postgres: one database role per service; install vault --baseline-from-live: the declaration of Vault's security configuration, read from a Vault you trust", runInstall},
		"plan":      {"dry run against the live Vault (names and metadata only): what an incident would rotate, destroy and revoke now, and every credential no catalogue entry covers", runPlan},
		"retry":     {"rotate again the tenants and platform catalogue entries whose rotation failed (or --tenant one) once the cause is mended; corrected totals reach the report", runRetry},
		"review":    {"record the post-incident review (root cause, lessons learned, preventive measures; --final ends it), by flags or in $EDITOR with --edit; the report is regenerated", runReview},
	}
}

// subcommands are the commands whose first argument names what they do.
var subcommands = map[string][]string{"dlq": {"list", "replay"}, "install": {"nats", "postgres", "vault"}}

// Main dispatches to a command through cobra, which gives the command
// tree its generated help and shell completion (`lockdown completion
// bash|zsh|fish|powershell`). Each command keeps parsing its own flags
// (with their LOCKDOWN_* defaults): completion offers the flags the
// command itself declares, so they live in one place.
func Main(ctx context.Context, args []string, out, errOut io.Writer) int {
	code := ExitOK
	root := &cobra.Command{
		Use:           "lockdown",
		Short:         "incident response for a compromised HashiCorp Vault",
		Long:          "lockdown steers Lockdown's incident response: raise a breach, follow an incident, run the room's console, read the report, replay dead letters (the drill of the whole runbook is lockdown-drill).\nRun 'lockdown <command> -h' for a command's flags.",
		SilenceUsage:  true,
		SilenceErrors: true,
		Run: func(cmd *cobra.Command, _ []string) {
			cmd.SetOut(errOut)
			_ = cmd.Help() // to the terminal: see writef
			code = ExitUsage
		},
	}
	root.SetOut(out)
	root.SetErr(errOut)
	cmds := commands()
	names := make([]string, 0, len(cmds))
	for n := range cmds {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		c := cmds[name]
		sub := &cobra.Command{
			Use:                name,
			Short:              c.summary,
			DisableFlagParsing: true, // the command parses its own flags
			RunE: func(cmd *cobra.Command, args []string) error {
				code = c.run(cmd.Context(), args, out, errOut)
				return nil
			},
			ValidArgsFunction: func(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
				return completions(cmd.Context(), c, subcommands[name], args, toComplete), cobra.ShellCompDirectiveNoFileComp
			},
		}
		// `lockdown help <command>` shows the command's own flags.
		sub.SetHelpFunc(func(cmd *cobra.Command, _ []string) {
			Writef(errOut, "lockdown %s: %s\n\n", name, c.summary)
			c.run(cmd.Context(), append(firstOf(subcommands[name]), "-h"), io.Discard, errOut)
		})
		root.AddCommand(sub)
	}
	if len(args) == 0 {
		root.SetOut(errOut)
		_ = root.Help() // to the terminal: see writef
		return ExitUsage
	}
	root.SetArgs(args)
	if err := root.ExecuteContext(ctx); err != nil {
		Writef(errOut, "lockdown: %v\n\nRun 'lockdown --help' for the commands.\n", err)
		return ExitUsage
	}
	return code
}

func firstOf(list []string) []string {
	if len(list) == 0 {
		return nil
	}
	return list[:1]
}

// flagProbe is the diagnostics writer completion hands a command asked for
// -h: newFlags records the command's flag set in it, so completion reads
// the flags the command declares (once, where it parses them) from the
// flag set itself.
type flagProbe struct {
	io.Writer
	sets []*flag.FlagSet
}

// completions offers a command's subcommands first (dlq, install), then
// its flags, from the flag sets the command makes when asked for -h.
func completions(ctx context.Context, c command, subs, args []string, toComplete string) []cobra.Completion {
	var out []cobra.Completion
	if len(subs) > 0 && len(args) == 0 {
		for _, s := range subs {
			if strings.HasPrefix(s, toComplete) {
				out = append(out, s)
			}
		}
		return out
	}
	if !strings.HasPrefix(toComplete, "-") {
		return nil
	}
	help := []string{"-h"}
	if len(subs) > 0 {
		help = []string{args[0], "-h"}
	}
	probe := &flagProbe{Writer: io.Discard}
	c.run(ctx, help, io.Discard, probe)
	for _, fs := range probe.sets {
		fs.VisitAll(func(f *flag.Flag) {
			if name := "--" + f.Name; strings.HasPrefix(name, toComplete) {
				out = append(out, name)
			}
		})
	}
	return out
}

// newFlags returns a flag set that reports errors instead of exiting.
func NewFlags(name string, errOut io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("lockdown "+name, flag.ContinueOnError)
	if probe, ok := errOut.(*flagProbe); ok {
		probe.sets = append(probe.sets, fs)
	}
	fs.SetOutput(errOut)
	return fs
}

// parse parses flags; it returns an exit code and false when the command
// must stop (help asked, or bad usage).
func Parse(fs *flag.FlagSet, args []string) (int, bool) {
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return ExitOK, false
		}
		return ExitUsage, false
	}
	if fs.NArg() > 0 {
		Writef(fs.Output(), "%s: unexpected arguments %v\n", fs.Name(), fs.Args())
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
	if code, ok := Parse(fs, args); !ok {
		return "", code, false
	}
	if id == "" {
		Writeln(errOut, usage)
		return "", ExitUsage, false
	}
	return id, 0, true
}

// envOr reads LOCKDOWN_<key> with a default, so flags default from the
// environment like the services' configuration.
func EnvOr(key, def string) string {
	if v, ok := os.LookupEnv("LOCKDOWN_" + key); ok {
		return v
	}
	return def
}

// printJSON writes v as indented JSON.
func PrintJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// A command writes its result and its diagnostics to the terminal: out and
// errOut are os.Stdout and os.Stderr but in tests. A write that fails there
// (a closed pipe) has nowhere else to be reported, and the exit code
// already tells the command's outcome, so the helpers below drop the
// write's error on purpose, in this one place.

// writef is fmt.Fprintf to a command's output.
func Writef(w io.Writer, format string, a ...any) { _, _ = fmt.Fprintf(w, format, a...) }

// writeln is fmt.Fprintln to a command's output.
func Writeln(w io.Writer, a ...any) { _, _ = fmt.Fprintln(w, a...) }

// showJSON is printJSON to a command's output.
func ShowJSON(w io.Writer, v any) { _ = PrintJSON(w, v) }

// flushTable flushes a table written to a command's output.
func flushTable(tw *tabwriter.Writer) { _ = tw.Flush() }

// listFlag collects a repeatable string flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }
