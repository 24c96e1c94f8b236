package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	kbsv1 "github.com/cml-project/cml/proto/cml/kbs/v1"
)

type keyDestroy struct {
	conn    connFlags
	version uint
	yes     bool
	json    bool
}

func keyDestroyCommand() *command {
	return &command{
		name:     "destroy",
		synopsis: "ID [--version N] [--yes] [--json] [connection flags]",
		args:     []string{"ID"},
		summary:  "erase a key's bytes for good (crypto-shredding); irreversible",
		help: `
Destroys the key ID — every version — or with --version N only that
version: the key bytes are erased in the broker (crypto-shredding) and only
the metadata stays, as a tombstone, so the id is never reused by mistake.
IRREVERSIBLE: models encrypted with a destroyed version can never be
decrypted again, by anyone. Destroying something destroyed succeeds and
changes nothing. Needs the admin role.

On a terminal kbsctl asks you to type the key id to confirm. Otherwise
(scripts, CI) it refuses unless --yes is given.
` + connHelp + `

Examples:
  kbsctl key destroy llama-3-8b
  kbsctl key destroy llama-3-8b --version 1 --yes
`,
		setup: func(fs *flag.FlagSet) action {
			c := &keyDestroy{}
			c.conn.register(fs)
			fs.UintVar(&c.version, "version", 0, "destroy only version `N` (default: the whole key)")
			fs.BoolVar(&c.yes, "yes", false, "do not ask for confirmation (required when stdin is not a terminal)")
			fs.BoolVar(&c.json, "json", false, "print the key's metadata as JSON")
			return c.run
		},
	}
}

func (c *keyDestroy) run(ctx context.Context, e *env, args []string) error {
	id := args[0]
	if err := validKeyID("key destroy: ID", id); err != nil {
		return err
	}
	version, err := versionFlag("version", c.version)
	if err != nil {
		return err
	}
	what := "every version of key " + id
	if version != 0 {
		what = fmt.Sprintf("version %d of key %s", version, id)
	}
	if !c.yes {
		if !e.stdinTerminal {
			return usagef("destroy: refusing to destroy %s without --yes when stdin is not a terminal; destroying is irreversible", what)
		}
		// Check the connection flags before asking.
		if _, _, err := c.conn.options(e); err != nil {
			return err
		}
		if err := confirm(e, what, id); err != nil {
			return err
		}
	}
	hint := func(reason string) string {
		return destroyHint(reason, id, version)
	}
	resp, err := adminCall(ctx, e, &c.conn, "key destroy "+id+versionSuffix(version), hint,
		func(ctx context.Context, a kbsv1.AdminServiceClient) (*kbsv1.DestroyKeyResponse, error) {
			return a.DestroyKey(ctx, &kbsv1.DestroyKeyRequest{KeyId: id, Version: version, WholeKey: version == 0})
		})
	if err != nil {
		return err
	}
	if c.json {
		return printJSON(e.stdout, resp.GetKey())
	}
	fmt.Fprintf(e.stdout, "destroyed %s: the key bytes are erased; the metadata stays as a tombstone\n", sanitize(what))
	return nil
}

// destroyHint is keyHint plus the fix for destroying a primary version:
// the commands that rotate first and then destroy that version.
func destroyHint(reason, id string, version uint32) string {
	if reason == "primary_version" {
		return fmt.Sprintf("run 'kbsctl key rotate %s', then 'kbsctl key destroy %s --version %d' again; 'kbsctl key destroy %s' destroys the whole key",
			sanitize(id), sanitize(id), version, sanitize(id))
	}
	return keyHint(reason)
}

// maxConfirmLine bounds the confirmation line read from the terminal.
const maxConfirmLine = 1024

// confirm asks on the terminal for the key id and fails unless it is typed
// exactly.
func confirm(e *env, what, id string) error {
	fmt.Fprintf(e.stderr, "This erases %s for good: models encrypted with it can never be decrypted again.\nType the key id (%s) to confirm: ", sanitize(what), sanitize(id))
	line, err := bufio.NewReader(io.LimitReader(e.stdin, maxConfirmLine)).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("destroy: reading the confirmation: %w", err)
	}
	if strings.TrimRight(line, "\r\n") != id {
		return errors.New("destroy: not confirmed (the text typed was not the key id); nothing was destroyed")
	}
	return nil
}
