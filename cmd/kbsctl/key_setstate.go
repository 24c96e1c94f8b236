package main

import (
	"context"
	"flag"
	"fmt"

	kbsv1 "github.com/cml-project/cml/proto/cml/kbs/v1"
)

// keyStateChange is what 'key disable' and 'key enable' differ in; both
// take ID [--version N] [--json] and make one call.
type keyStateChange struct {
	verb    string // the command's name: "disable" or "enable"
	summary string
	about   string // the help text's first paragraph
	// call changes the state of version (0: the whole key) of key id.
	call func(ctx context.Context, admin kbsv1.AdminServiceClient, id string, version uint32) (*kbsv1.KeyMetadata, error)
	// done is the line printed on success (without --json).
	done func(id string, version uint32) string
}

// keyStateCommand builds the command for a.
func keyStateCommand(a keyStateChange) *command {
	return &command{
		name:     a.verb,
		synopsis: "ID [--version N] [--json] [connection flags]",
		args:     []string{"ID"},
		summary:  a.summary,
		help: "\n" + a.about + connHelp + fmt.Sprintf(`

Examples:
  kbsctl key %[1]s llama-3-8b
  kbsctl key %[1]s llama-3-8b --version 1
`, a.verb),
		setup: func(fs *flag.FlagSet) action {
			c := &keySetState{change: a}
			c.conn.register(fs)
			fs.UintVar(&c.version, "version", 0, a.verb+" only version `N` (default: the whole key)")
			fs.BoolVar(&c.json, "json", false, "print the key's metadata as JSON")
			return c.run
		},
	}
}

type keySetState struct {
	change  keyStateChange
	conn    connFlags
	version uint
	json    bool
}

func (c *keySetState) run(ctx context.Context, e *env, args []string) error {
	id := args[0]
	if err := validKeyID("key "+c.change.verb+": ID", id); err != nil {
		return err
	}
	version, err := versionFlag("version", c.version)
	if err != nil {
		return err
	}
	key, err := adminCall(ctx, e, &c.conn, "key "+c.change.verb+" "+id+versionSuffix(version), keyHint,
		func(ctx context.Context, a kbsv1.AdminServiceClient) (*kbsv1.KeyMetadata, error) {
			return c.change.call(ctx, a, id, version)
		})
	if err != nil {
		return err
	}
	if c.json {
		return printJSON(e.stdout, key)
	}
	fmt.Fprintln(e.stdout, c.change.done(sanitize(id), version))
	return nil
}
