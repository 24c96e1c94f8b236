package main

import (
	"context"
	"flag"
	"fmt"

	kbsv1 "github.com/cml-project/cml/proto/cml/kbs/v1"
)

type keyDisable struct {
	conn    connFlags
	version uint
	json    bool
}

func keyDisableCommand() *command {
	return &command{
		name:     "disable",
		synopsis: "ID [--version N] [--json] [connection flags]",
		args:     []string{"ID"},
		summary:  "stop releasing a key, or one version of it (reversible)",
		help: `
Disables the key ID as a whole, or with --version N only that version.
Nothing disabled is released or exported, but it is kept: 'kbsctl key
enable' undoes it. Disabling a key leaves its versions' own states as they
were. Disabling something disabled succeeds and changes nothing. Needs the
admin role.
` + connHelp + `

Examples:
  kbsctl key disable llama-3-8b
  kbsctl key disable llama-3-8b --version 1
`,
		setup: func(fs *flag.FlagSet) action {
			c := &keyDisable{}
			c.conn.register(fs)
			fs.UintVar(&c.version, "version", 0, "disable only version `N` (default: the whole key)")
			fs.BoolVar(&c.json, "json", false, "print the key's metadata as JSON")
			return c.run
		},
	}
}

func (c *keyDisable) run(ctx context.Context, e *env, args []string) error {
	id := args[0]
	if err := validKeyID("key disable: ID", id); err != nil {
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
	resp, err := kc.Admin().DisableKey(cctx, &kbsv1.DisableKeyRequest{KeyId: id, Version: version, WholeKey: version == 0})
	if err != nil {
		return kc.explain(ctx, "key disable "+id+versionSuffix(version), err, keyHint)
	}
	if c.json {
		return printJSON(e.stdout, resp.GetKey())
	}
	if version == 0 {
		fmt.Fprintf(e.stdout, "key %s is disabled: none of its versions is released or exported until 'kbsctl key enable %s'\n", sanitize(id), sanitize(id))
	} else {
		fmt.Fprintf(e.stdout, "version %d of key %s is disabled: it is not released or exported until 'kbsctl key enable %s --version %d'\n",
			version, sanitize(id), sanitize(id), version)
	}
	return nil
}
