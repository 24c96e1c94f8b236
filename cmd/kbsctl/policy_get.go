package main

import (
	"context"
	"flag"

	kbsv1 "github.com/cml-project/cml/proto/cml/kbs/v1"
)

type policyGet struct {
	conn    connFlags
	key     string
	version uint
}

func policyGetCommand() *command {
	return &command{
		name:     "get",
		synopsis: "--key ID [--version N] [connection flags]",
		summary:  "print a key's release policy as JSON (the format 'policy put' reads)",
		help: `
Prints the current version of the key's release policy, or version N with
--version, as the JSON form of cml.kbs.v1.Policy with proto field names:
exactly what 'kbsctl policy put --file' accepts (the output-only fields
key_id, version, create_time and created_by are ignored there). Needs the
admin or auditor role.
` + connHelp + `

Examples:
  kbsctl policy get --key llama-3-8b
  kbsctl policy get --key llama-3-8b --version 1 > old-policy.json
`,
		setup: func(fs *flag.FlagSet) action {
			c := &policyGet{}
			c.conn.register(fs)
			fs.StringVar(&c.key, "key", "", "key `ID` (required)")
			fs.UintVar(&c.version, "version", 0, "policy version `N` (default: the current one)")
			return c.run
		},
	}
}

func (c *policyGet) run(ctx context.Context, e *env, _ []string) error {
	if c.key == "" {
		return usagef("get: --key is required: the key whose policy to print")
	}
	if err := validKeyID("policy get: --key", c.key); err != nil {
		return err
	}
	version, err := versionFlag("version", c.version)
	if err != nil {
		return err
	}
	hint := func(reason string) string {
		if version != 0 && (reason == "no_policy" || reason == "policy_not_found") {
			return "'kbsctl policy list --key " + c.key + "' lists the versions"
		}
		return policyHint(reason)
	}
	resp, err := adminCall(ctx, e, &c.conn, "policy get --key "+c.key+versionSuffix(version), hint,
		func(ctx context.Context, a kbsv1.AdminServiceClient) (*kbsv1.GetPolicyResponse, error) {
			return a.GetPolicy(ctx, &kbsv1.GetPolicyRequest{KeyId: c.key, Version: version})
		})
	if err != nil {
		return err
	}
	return printJSON(e.stdout, resp.GetPolicy())
}
