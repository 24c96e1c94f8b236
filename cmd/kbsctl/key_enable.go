package main

import (
	"context"
	"flag"
	"fmt"

	kbsv1 "github.com/cml-project/cml/proto/cml/kbs/v1"
)

type keyEnable struct {
	conn    connFlags
	version uint
	json    bool
}

func keyEnableCommand() *command {
	return &command{
		name:     "enable",
		synopsis: "ID [--version N] [--json] [connection flags]",
		args:     []string{"ID"},
		summary:  "enable a disabled key, or one disabled version of it",
		help: `
Enables the key ID as a whole, or with --version N only that version. Enabling
a key restores its versions' own states as they were. A destroyed key or
version cannot be enabled. Enabling something enabled succeeds and changes
nothing. Needs the admin role.
` + connHelp + `

Examples:
  kbsctl key enable llama-3-8b
  kbsctl key enable llama-3-8b --version 1
`,
		setup: func(fs *flag.FlagSet) action {
			c := &keyEnable{}
			c.conn.register(fs)
			fs.UintVar(&c.version, "version", 0, "enable only version `N` (default: the whole key)")
			fs.BoolVar(&c.json, "json", false, "print the key's metadata as JSON")
			return c.run
		},
	}
}

func (c *keyEnable) run(ctx context.Context, e *env, args []string) error {
	id := args[0]
	if err := validKeyID("key enable: ID", id); err != nil {
		return err
	}
	version, err := versionFlag("version", c.version)
	if err != nil {
		return err
	}
	kc, err := c.conn.dial(ctx, e)
	if err != nil {
		return err
	}
	defer kc.Close()
	cctx, cancel := kc.call(ctx)
	defer cancel()
	resp, err := kc.Admin().EnableKey(cctx, &kbsv1.EnableKeyRequest{KeyId: id, Version: version, WholeKey: version == 0})
	if err != nil {
		return kc.explain(ctx, "key enable "+id+versionSuffix(version), err, keyHint)
	}
	if c.json {
		return printJSON(e.stdout, resp.GetKey())
	}
	if version == 0 {
		fmt.Fprintf(e.stdout, "key %s is enabled: its enabled versions can be released again (subject to its policy)\n", sanitize(id))
	} else {
		fmt.Fprintf(e.stdout, "version %d of key %s is enabled\n", version, sanitize(id))
	}
	return nil
}
