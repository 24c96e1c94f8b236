package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// Exit codes. They are part of the command line contract (docs/kbs.md).
const (
	exitOK      = 0 // success; serve: stopped by SIGTERM/SIGINT after a graceful shutdown
	exitFailure = 1 // any other failure: the store, the KEK, identity, a listener, ...
	exitUsage   = 2 // bad command line or environment: unknown flag, bad value, missing or conflicting flags
	exitExists  = 3 // init: the data directory is already initialised; nothing was changed
)

const exitCodesHelp = `Exit codes:
  0  success (serve: stopped by SIGTERM or SIGINT after a graceful shutdown)
  1  failure: the KEK or keystore cannot be opened, identity is unavailable,
     a port cannot be bound, the server failed, ...
  2  usage error: unknown command or flag, bad flag or environment value,
     missing or conflicting flags
  3  init only: the data directory is already initialised (nothing changed)
`

// env is everything of the outside world a command may use; tests build one
// with their own environment and writers.
type env struct {
	lookupEnv      func(string) (string, bool)
	stdout, stderr io.Writer
	now            func() time.Time
}

// run is the whole program: it runs the command named by args and returns
// the process exit code.
func run(ctx context.Context, args []string, lookupEnv func(string) (string, bool), stdout, stderr io.Writer) int {
	e := &env{lookupEnv: lookupEnv, stdout: stdout, stderr: stderr, now: time.Now}
	return e.report(dispatch(ctx, e, commands(), args))
}

// A command is one subcommand; each lives in its own file.
type command struct {
	name     string
	synopsis string // after "kbs <name>"
	summary  string // one line for the command list
	help     string // description and examples for --help
	// setup defines the command's flags and returns the function that runs
	// the command once they are parsed.
	setup func(fl *flags) action
}

// An action runs a parsed command.
type action func(ctx context.Context, e *env) error

func commands() []*command { return []*command{initCommand(), serveCommand(), compactCommand()} }

// usageError is a bad command line or environment: exit 2 and a pointer to
// the help of path.
type usageError struct {
	path string
	msg  string
}

func (u *usageError) Error() string { return u.msg }

func usagef(format string, a ...any) error { return &usageError{msg: fmt.Sprintf(format, a...)} }

// codedError carries a specific exit code.
type codedError struct {
	code int
	err  error
}

func (c *codedError) Error() string { return c.err.Error() }
func (c *codedError) Unwrap() error { return c.err }

// loggedError has already been written to the structured log; report only
// maps it to an exit code.
type loggedError struct{ err error }

func (l *loggedError) Error() string { return l.err.Error() }
func (l *loggedError) Unwrap() error { return l.err }

// report prints err (unless already logged) and returns the exit code.
func (e *env) report(err error) int {
	if err == nil {
		return exitOK
	}
	var ue *usageError
	var le *loggedError
	switch {
	case errors.As(err, &ue):
		fmt.Fprintf(e.stderr, "kbs: %s\nRun '%s --help' for usage.\n", err, ue.path)
		return exitUsage
	case errors.As(err, &le):
	default:
		fmt.Fprintf(e.stderr, "kbs: %s\n", err)
	}
	var ce *codedError
	if errors.As(err, &ce) {
		return ce.code
	}
	return exitFailure
}

// dispatch finds the command, parses its flags and environment and runs it.
// Help asked for explicitly goes to stdout and is not an error.
func dispatch(ctx context.Context, e *env, cmds []*command, args []string) error {
	if len(args) == 0 {
		printTopUsage(e.stderr, cmds)
		return &usageError{path: "kbs", msg: "missing command"}
	}
	if isHelp(args[0]) || args[0] == "help" {
		if len(args) == 1 {
			printTopUsage(e.stdout, cmds)
			return nil
		}
		c := findCommand(cmds, args[1])
		if c == nil || len(args) > 2 {
			return &usageError{path: "kbs", msg: fmt.Sprintf("help: unknown command %q (known: %s)", strings.Join(args[1:], " "), commandNames(cmds))}
		}
		fl := newFlags("kbs " + c.name)
		c.setup(fl)
		printCommandUsage(e.stdout, c, fl)
		return nil
	}
	c := findCommand(cmds, args[0])
	if c == nil {
		if strings.HasPrefix(args[0], "-") {
			return &usageError{path: "kbs", msg: fmt.Sprintf("unknown flag %s before the command (flags go after it, e.g. 'kbs serve --help')", args[0])}
		}
		return &usageError{path: "kbs", msg: fmt.Sprintf("unknown command %q (known: %s)", args[0], commandNames(cmds))}
	}
	path := "kbs " + c.name
	fl := newFlags(path)
	act := c.setup(fl)
	err := fl.parse(args[1:], e.lookupEnv)
	if errors.Is(err, flag.ErrHelp) {
		printCommandUsage(e.stdout, c, fl)
		return nil
	}
	if err == nil {
		err = act(ctx, e)
	}
	var ue *usageError
	if errors.As(err, &ue) && ue.path == "" {
		ue.path = path
	}
	return err
}

// flags is a flag set in which every flag can also come from the
// environment variable KBS_<NAME> (upper case, "-" as "_"). A flag on the
// command line wins over the environment, which wins over the default.
type flags struct {
	fs    *flag.FlagSet
	order []string          // flag names in definition order, for the help
	args  map[string]string // flag name → placeholder of its value in the help
	extra [][2]string       // further environment variables to document: name, text
	set   map[string]bool
}

func newFlags(path string) *flags {
	fs := flag.NewFlagSet(path, flag.ContinueOnError)
	fs.SetOutput(io.Discard) // dispatch reports errors itself
	return &flags{fs: fs, args: map[string]string{}, set: map[string]bool{}}
}

// envName is the environment variable of a flag.
func envName(flagName string) string {
	return "KBS_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// String, Duration, Int64 and Bool define flags; arg names the value in
// the help ("--data-dir DIR").
func (f *flags) String(p *string, name, arg, def, usage string) {
	f.fs.StringVar(p, name, def, usage)
	f.add(name, arg)
}

func (f *flags) Duration(p *time.Duration, name, arg string, def time.Duration, usage string) {
	f.fs.DurationVar(p, name, def, usage)
	f.add(name, arg)
}

func (f *flags) Int64(p *int64, name, arg string, def int64, usage string) {
	f.fs.Int64Var(p, name, def, usage)
	f.add(name, arg)
}

func (f *flags) Bool(p *bool, name string, def bool, usage string) {
	f.fs.BoolVar(p, name, def, usage)
	f.add(name, "")
}

func (f *flags) add(name, arg string) {
	f.order = append(f.order, name)
	f.args[name] = arg
}

// Env documents an environment variable that is not a flag's.
func (f *flags) Env(name, text string) { f.extra = append(f.extra, [2]string{name, text}) }

// IsSet reports whether a flag was given on the command line or in the
// environment.
func (f *flags) IsSet(name string) bool { return f.set[name] }

// parse parses args, then fills every flag not on the command line from its
// environment variable, if that is set (even to the empty string).
func (f *flags) parse(args []string, lookupEnv func(string) (string, bool)) error {
	if err := f.fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usagef("%s", flagErrorMessage(err))
	}
	if f.fs.NArg() > 0 {
		return usagef("unexpected argument %q (%s takes only flags)", f.fs.Arg(0), f.fs.Name())
	}
	f.fs.Visit(func(fl *flag.Flag) { f.set[fl.Name] = true })
	for _, name := range f.order {
		if f.set[name] {
			continue
		}
		v, ok := lookupEnv(envName(name))
		if !ok {
			continue
		}
		if err := f.fs.Set(name, v); err != nil {
			return usagef("environment variable %s: invalid value for --%s: %v", envName(name), name, unwrapFlagErr(err))
		}
		f.set[name] = true
	}
	return nil
}

// unwrapFlagErr drops the flag package's "parse error" wrapping of a value.
func unwrapFlagErr(err error) error {
	if u := errors.Unwrap(err); u != nil {
		return u
	}
	return err
}

// flagErrorMessage rewords the flag package's errors with the "--name"
// spelling the help uses.
func flagErrorMessage(err error) string {
	msg := err.Error()
	if name, ok := strings.CutPrefix(msg, "flag provided but not defined: -"); ok {
		return "unknown flag --" + name
	}
	if name, ok := strings.CutPrefix(msg, "flag needs an argument: -"); ok {
		return "flag --" + name + " needs a value"
	}
	msg = strings.Replace(msg, "for flag -", "for flag --", 1)
	return strings.Replace(msg, "for -", "for --", 1)
}

func isHelp(s string) bool { return s == "-h" || s == "-help" || s == "--help" }

func findCommand(cmds []*command, name string) *command {
	for _, c := range cmds {
		if c.name == name {
			return c
		}
	}
	return nil
}

func commandNames(cmds []*command) string {
	names := make([]string, len(cmds))
	for i, c := range cmds {
		names[i] = c.name
	}
	return strings.Join(names, ", ")
}

func printTopUsage(w io.Writer, cmds []*command) {
	fmt.Fprint(w, `kbs is the key broker of the Confidential Model Loader: it keeps model keys
encrypted at rest and releases one only to an attested Intel TDX workload
with an allowed SPIFFE ID.

Usage:
  kbs <command> [flags]
  kbs help [<command>]

Commands:
`)
	tw := tabwriter.NewWriter(w, 0, 0, 3, ' ', 0)
	for _, c := range cmds {
		fmt.Fprintf(tw, "  %s\t%s\n", c.name, c.summary)
	}
	tw.Flush()
	fmt.Fprint(w, `
Every flag can also be set by an environment variable KBS_<FLAG>, upper case
with "-" as "_" (--data-dir is KBS_DATA_DIR). A flag on the command line wins
over the environment, which wins over the default.

Run 'kbs <command> --help' for a command's flags.

`+exitCodesHelp)
}

func printCommandUsage(w io.Writer, c *command, fl *flags) {
	fmt.Fprintf(w, "Usage:\n  kbs %s %s\n\n%s\n\nFlags (environment variable in brackets; a flag on the command line wins):\n", c.name, c.synopsis, strings.TrimSpace(c.help))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, name := range fl.order {
		f := fl.fs.Lookup(name)
		left := "--" + name
		if arg := fl.args[name]; arg != "" {
			left += " " + arg
		}
		lines := strings.Split(f.Usage, "\n")
		if f.DefValue != "" && f.DefValue != "false" {
			lines[len(lines)-1] += fmt.Sprintf(" (default %s)", f.DefValue)
		}
		lines = append(lines, "["+envName(name)+"]")
		fmt.Fprintf(tw, "  %s\t%s\n", left, lines[0])
		for _, l := range lines[1:] {
			fmt.Fprintf(tw, "  \t%s\n", l)
		}
	}
	fmt.Fprintf(tw, "  %s\t%s\n", "-h, --help", "show this help")
	tw.Flush()
	if len(fl.extra) > 0 {
		fmt.Fprint(w, "\nOther environment variables:\n")
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		for _, x := range fl.extra {
			lines := strings.Split(x[1], "\n")
			fmt.Fprintf(tw, "  %s\t%s\n", x[0], lines[0])
			for _, l := range lines[1:] {
				fmt.Fprintf(tw, "  \t%s\n", l)
			}
		}
		tw.Flush()
	}
	fmt.Fprint(w, "\n"+exitCodesHelp)
}
