package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/cml-project/cml/internal/progress"
)

// Exit codes. They are part of the CLI's interface (docs/kbsctl.md).
const (
	exitOK          = 0   // success
	exitFailure     = 1   // any other failure: I/O, bad key file, output exists, …
	exitUsage       = 2   // bad command line: unknown command or flag, missing argument
	exitRefused     = 3   // a model was refused: wrong key, tampered, truncated, unsafe path, …
	exitInterrupted = 130 // SIGINT/SIGTERM (128 + SIGINT, as shells report it)
)

// env is everything of the outside world that a command may use. Tests build
// one directly to pin the clock and the terminal decision.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	// terminal reports whether stderr is an interactive terminal, i.e. whether
	// a progress line may be drawn there.
	terminal bool
	// stdinTerminal reports whether stdin is an interactive terminal, i.e.
	// whether a command may ask for a typed confirmation.
	stdinTerminal bool
	now           func() time.Time
	// getenv reads an environment variable (the defaults of the connection
	// flags); nil reads nothing.
	getenv func(string) string
}

// lookupEnv returns the environment variable name, or "" without getenv.
func (e *env) lookupEnv(name string) string {
	if e.getenv == nil {
		return ""
	}
	return e.getenv(name)
}

// run is the whole program: it runs the command named by args and returns
// the process exit code.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	f, _ := stderr.(*os.File)
	in, _ := stdin.(*os.File)
	e := &env{
		stdin:         stdin,
		stdout:        stdout,
		stderr:        stderr,
		terminal:      progress.IsTerminal(f),
		stdinTerminal: progress.IsTerminal(in),
		now:           time.Now,
		getenv:        os.Getenv,
	}
	return e.run(ctx, args)
}

// run dispatches args and returns the exit code.
func (e *env) run(ctx context.Context, args []string) int {
	return e.report(ctx, dispatch(ctx, e, commandGroups(), args))
}

// report prints err (if any) on stderr as "kbsctl: <message>", with a
// pointer to --help for a usage error, and returns the exit code.
func (e *env) report(ctx context.Context, err error) int {
	if err == nil {
		return exitOK
	}
	fmt.Fprintf(e.stderr, "kbsctl: %s\n", sanitize(err.Error()))
	var ue *usageError
	if errors.As(err, &ue) {
		fmt.Fprintf(e.stderr, "Run '%s --help' for usage.\n", ue.path)
	}
	return e.exitCode(ctx, err)
}

// exitCode maps the outcome of a command to the process exit code.
func (e *env) exitCode(ctx context.Context, err error) int {
	var ue *usageError
	var ce *codedError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ue):
		return exitUsage
	case ctx.Err() != nil && errors.Is(err, context.Canceled):
		return exitInterrupted
	case errors.As(err, &ce):
		return ce.code
	default:
		return exitFailure
	}
}

// A group is a noun ("model", later "key", "policy", …) with its verbs.
type group struct {
	name     string
	summary  string
	commands []*command
}

// A command is one verb of a group. Each lives in its own file
// (<group>_<name>.go) with a constructor returning its *command. A name may
// have two words ("tdxsim init", in dev_tdxsim_init.go): the first then
// works like a subgroup on the command line.
type command struct {
	name     string
	synopsis string   // after "kbsctl <group> <name>", e.g. "DIR [--json]"
	args     []string // names of the positional arguments; exactly this many are required
	summary  string   // one line, shown in the group's command list
	help     string   // description and examples, shown by --help
	// setup registers the command's flags on fs and returns the function that
	// runs the command once fs is parsed; args are the positional arguments.
	setup func(fs *flag.FlagSet) action
}

// An action runs a parsed command.
type action func(ctx context.Context, e *env, args []string) error

// usageError is a bad command line; it exits with exitUsage and points the
// user at the --help of path.
type usageError struct {
	path string // "kbsctl model encrypt"; filled in by dispatch when empty
	msg  string
}

func (u *usageError) Error() string { return u.msg }

// usagef returns a usage error for the running command.
func usagef(format string, a ...any) error {
	return &usageError{msg: fmt.Sprintf(format, a...)}
}

// codedError carries a specific exit code, e.g. exitRefused.
type codedError struct {
	code int
	err  error
}

func (c *codedError) Error() string { return c.err.Error() }
func (c *codedError) Unwrap() error { return c.err }

// dispatch finds the command named by args, parses its flags and runs it.
// Help requested explicitly goes to stdout and is not an error.
func dispatch(ctx context.Context, e *env, groups []*group, args []string) error {
	if len(args) == 0 {
		printTopUsage(e.stderr, groups)
		return &usageError{path: "kbsctl", msg: "missing command group"}
	}
	if isHelp(args[0]) || args[0] == "help" {
		return printHelpFor(e.stdout, groups, args[1:])
	}
	if strings.HasPrefix(args[0], "-") {
		return &usageError{path: "kbsctl", msg: fmt.Sprintf("unknown flag %s (flags go after the command, e.g. 'kbsctl model encrypt --help')", args[0])}
	}
	g := findGroup(groups, args[0])
	if g == nil {
		return &usageError{path: "kbsctl", msg: fmt.Sprintf("unknown command group %q (known: %s)", args[0], groupNames(groups))}
	}
	gpath := "kbsctl " + g.name
	if len(args) == 1 {
		printGroupUsage(e.stderr, g)
		return &usageError{path: gpath, msg: fmt.Sprintf("missing %s command", g.name)}
	}
	if isHelp(args[1]) {
		printGroupUsage(e.stdout, g)
		return nil
	}
	c, words := findCommand(g, args[1:])
	if c == nil {
		if subs := subcommandNames(g, args[1]); subs != "" {
			spath := gpath + " " + args[1]
			switch {
			case len(args) == 2:
				printGroupUsage(e.stderr, g)
				return &usageError{path: gpath, msg: fmt.Sprintf("missing %s command (known: %s)", args[1], subs)}
			case isHelp(args[2]):
				printGroupUsage(e.stdout, g)
				return nil
			}
			return &usageError{path: gpath, msg: fmt.Sprintf("unknown %s command %q (known: %s)", spath[len("kbsctl "):], args[2], subs)}
		}
		return &usageError{path: gpath, msg: fmt.Sprintf("unknown %s command %q (known: %s)", g.name, args[1], commandNames(g))}
	}
	path := gpath + " " + c.name

	fs := flag.NewFlagSet(path, flag.ContinueOnError)
	fs.SetOutput(io.Discard) // dispatch prints errors and usage itself
	act := c.setup(fs)
	pos, err := parseInterspersed(fs, args[1+words:])
	if errors.Is(err, flag.ErrHelp) {
		printCommandUsage(e.stdout, path, c, fs)
		return nil
	}
	if err != nil {
		return &usageError{path: path, msg: c.name + ": " + flagErrorMessage(err)}
	}
	if len(pos) != len(c.args) {
		return &usageError{path: path, msg: argCountMessage(c, pos)}
	}
	err = act(ctx, e, pos)
	var ue *usageError
	if errors.As(err, &ue) && ue.path == "" {
		ue.path = path
	}
	return err
}

// flagErrorMessage rewords the flag package's errors with the "--name"
// spelling that the help uses.
func flagErrorMessage(err error) string {
	msg := err.Error()
	if name, ok := strings.CutPrefix(msg, "flag provided but not defined: -"); ok {
		return "unknown flag --" + name
	}
	if name, ok := strings.CutPrefix(msg, "flag needs an argument: -"); ok {
		return "flag --" + name + " needs a value"
	}
	msg = strings.Replace(msg, "for flag -", "for flag --", 1)
	return strings.Replace(msg, "for -", "for --", 1) // invalid boolean value
}

func argCountMessage(c *command, pos []string) string {
	switch {
	case len(c.args) == 0:
		return fmt.Sprintf("%s takes no arguments, got %q", c.name, pos)
	case len(pos) < len(c.args):
		return fmt.Sprintf("%s: missing %s", c.name, strings.Join(c.args[len(pos):], " "))
	default:
		return fmt.Sprintf("%s: unexpected argument %q after %s", c.name, pos[len(c.args)], strings.Join(c.args, " "))
	}
}

// parseInterspersed parses flags that may come before, between and after
// positional arguments ("kbsctl model inspect DIR --json"); the flag package
// alone stops at the first positional. "--" ends flag parsing.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		// fs.Parse stopped either at a positional or right after "--". In
		// the second case everything left is positional.
		if consumed := len(args) - len(rest); consumed > 0 && args[consumed-1] == "--" {
			return append(pos, rest...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// sanitize escapes control characters in s, which may quote names read from
// an untrusted model (a file name in a manifest, a key id in a header), so
// that printing it cannot drive the terminal.
func sanitize(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case r != ' ' && !unicode.IsPrint(r):
			q := strconv.QuoteRune(r)
			b.WriteString(q[1 : len(q)-1])
		default:
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}

func isHelp(s string) bool { return s == "-h" || s == "-help" || s == "--help" }

func findGroup(groups []*group, name string) *group {
	for _, g := range groups {
		if g.name == name {
			return g
		}
	}
	return nil
}

// findCommand returns the command of g named by the leading words of args,
// and how many words its name has.
func findCommand(g *group, args []string) (*command, int) {
	for _, c := range g.commands {
		words := strings.Fields(c.name)
		if len(args) >= len(words) && slices.Equal(args[:len(words)], words) {
			return c, len(words)
		}
	}
	return nil, 0
}

// subcommandNames lists the second words of g's two-word commands whose
// first word is first ("init, quote" for "tdxsim"), or "" if there are none.
func subcommandNames(g *group, first string) string {
	var names []string
	for _, c := range g.commands {
		if w := strings.Fields(c.name); len(w) == 2 && w[0] == first {
			names = append(names, w[1])
		}
	}
	return strings.Join(names, ", ")
}

func groupNames(groups []*group) string {
	names := make([]string, len(groups))
	for i, g := range groups {
		names[i] = g.name
	}
	return strings.Join(names, ", ")
}

func commandNames(g *group) string {
	names := make([]string, len(g.commands))
	for i, c := range g.commands {
		names[i] = c.name
	}
	return strings.Join(names, ", ")
}

// printHelpFor serves "kbsctl help [GROUP [COMMAND]]".
func printHelpFor(w io.Writer, groups []*group, args []string) error {
	if len(args) == 0 {
		printTopUsage(w, groups)
		return nil
	}
	g := findGroup(groups, args[0])
	if g == nil {
		return &usageError{path: "kbsctl", msg: fmt.Sprintf("help: unknown command group %q (known: %s)", args[0], groupNames(groups))}
	}
	if len(args) == 1 {
		printGroupUsage(w, g)
		return nil
	}
	c, words := findCommand(g, args[1:])
	if c == nil || len(args) > 1+words {
		return &usageError{path: "kbsctl " + g.name, msg: fmt.Sprintf("help: unknown %s command %q (known: %s)", g.name, strings.Join(args[1:], " "), commandNames(g))}
	}
	path := "kbsctl " + g.name + " " + c.name
	fs := flag.NewFlagSet(path, flag.ContinueOnError)
	c.setup(fs)
	printCommandUsage(w, path, c, fs)
	return nil
}

const exitCodesHelp = `Exit codes:
  0    success
  1    failure (I/O error, bad key file, output already exists, key broker
       error, ...)
  2    usage error (unknown command or flag, missing argument)
  3    refused: a model refused (wrong key, key id/version mismatch, tampered,
       truncated or extended file, unsafe path, file missing from or not in
       the manifest, unsupported format); the key broker denied the request
       (PermissionDenied: its reason code and request id are printed); a
       'policy test' that denies; an audit log that fails 'audit verify'
  130  interrupted (SIGINT/SIGTERM); partial output is removed
`

func printTopUsage(w io.Writer, groups []*group) {
	fmt.Fprint(w, `kbsctl is the admin CLI of the Confidential Model Loader.

Usage:
  kbsctl <group> <command> [flags] [arguments]
  kbsctl help [<group> [<command>]]

Command groups:
`)
	tw := tabwriter.NewWriter(w, 0, 0, 3, ' ', 0)
	for _, g := range groups {
		fmt.Fprintf(tw, "  %s\t%s\n", g.name, g.summary)
	}
	tw.Flush()
	fmt.Fprint(w, `
Examples:
  kbsctl key create llama-3-8b --kbs kbs.example:8443 --kbs-spiffe-id spiffe://example.org/kbs \
      --svid-cert admin.pem --svid-key admin-key.pem --bundle ca.pem
  kbsctl policy put --key llama-3-8b --file policy.json
  kbsctl model encrypt --kbs kbs.example:8443 --key-id llama-3-8b --in ./llama-3-8b --out ./llama-3-8b.emdl
  kbsctl model encrypt --help

The connection flags may come from the environment: CML_KBS, CML_KBS_SPIFFE_ID,
SPIFFE_ENDPOINT_SOCKET or CML_SVID_CERT, CML_SVID_KEY and CML_BUNDLE.

Run 'kbsctl <group> --help' for a group's commands and
'kbsctl <group> <command> --help' for a command's flags.

`+exitCodesHelp)
}

func printGroupUsage(w io.Writer, g *group) {
	fmt.Fprintf(w, "kbsctl %s: %s.\n\nUsage:\n  kbsctl %s <command> [flags] [arguments]\n\nCommands:\n", g.name, g.summary, g.name)
	tw := tabwriter.NewWriter(w, 0, 0, 3, ' ', 0)
	for _, c := range g.commands {
		fmt.Fprintf(tw, "  %s\t%s\n", c.name, c.summary)
	}
	tw.Flush()
	fmt.Fprintf(w, "\nRun 'kbsctl %s <command> --help' for a command's flags and examples.\n", g.name)
}

func printCommandUsage(w io.Writer, path string, c *command, fs *flag.FlagSet) {
	fmt.Fprintf(w, "Usage:\n  %s %s\n\n%s\n", path, c.synopsis, strings.TrimSpace(c.help))
	fmt.Fprint(w, "\nFlags:\n")
	tw := tabwriter.NewWriter(w, 0, 0, 3, ' ', 0)
	fs.VisitAll(func(f *flag.Flag) {
		name, usage := flag.UnquoteUsage(f)
		left := "--" + f.Name
		if name != "" {
			left += " " + name
		}
		if !isZeroDefault(f) {
			usage += fmt.Sprintf(" (default %s)", f.DefValue)
		}
		fmt.Fprintf(tw, "  %s\t%s\n", left, usage)
	})
	fmt.Fprintf(tw, "  %s\t%s\n", "-h, --help", "show this help")
	tw.Flush()
}

func isZeroDefault(f *flag.Flag) bool {
	switch f.DefValue {
	case "", "0", "false":
		return true
	}
	return false
}
