package main

import (
	"context"
	"flag"

	kbsv1 "github.com/cml-project/cml/proto/cml/kbs/v1"
)

type keyGet struct {
	conn connFlags
	json bool
}

func keyGetCommand() *command {
	return &command{
		name:     "get",
		synopsis: "ID [--json] [connection flags]",
		args:     []string{"ID"},
		summary:  "show a key's state, versions, policy version and labels (never key bytes)",
		help: `
Shows the metadata of the key ID: algorithm, state, primary version, the
version of its release policy, description, labels, and every version with
its state and origin (generated or imported). Key bytes are never shown.
Needs the admin or auditor role.

--json prints the KeyMetadata message of proto/cml/kbs/v1/types.proto with
its proto field names.
` + connHelp + `

Examples:
  kbsctl key get llama-3-8b
  kbsctl key get llama-3-8b --json | jq .primary_version
`,
		setup: func(fs *flag.FlagSet) action {
			c := &keyGet{}
			c.conn.register(fs)
			fs.BoolVar(&c.json, "json", false, "print the key's metadata as JSON")
			return c.run
		},
	}
}

func (c *keyGet) run(ctx context.Context, e *env, args []string) error {
	id := args[0]
	if err := validKeyID("key get: ID", id); err != nil {
		return err
	}
	resp, err := adminCall(ctx, e, &c.conn, "key get "+id, keyHint,
		func(ctx context.Context, a kbsv1.AdminServiceClient) (*kbsv1.GetKeyResponse, error) {
			return a.GetKey(ctx, &kbsv1.GetKeyRequest{KeyId: id})
		})
	if err != nil {
		return err
	}
	if c.json {
		return printJSON(e.stdout, resp.GetKey())
	}
	return printKey(e.stdout, resp.GetKey())
}
