package main

import (
	"context"
	"flag"
	"fmt"

	kbsv1 "github.com/cml-project/cml/proto/cml/kbs/v1"
)

type policyPut struct {
	conn connFlags
	key  string
	file string
	json bool
}

func policyPutCommand() *command {
	return &command{
		name:     "put",
		synopsis: "--key ID --file FILE [--json] [connection flags]",
		summary:  "store a new version of a key's release policy",
		help: `
Stores the policy in --file as the new version of the key's release policy;
it applies to every release from then on. The file is the JSON form of the
cml.kbs.v1.Policy message (proto/cml/kbs/v1/types.proto) — what 'kbsctl
policy get' prints, so get, edit, put works. Unknown fields are refused with
their name; the output-only fields key_id, version, create_time and
created_by are ignored. "--file -" reads stdin.

The broker validates the policy and refuses an invalid one with every
problem in its message: spiffe_ids is required, measurements are 96 hex
digits, and a policy that pins no TD measurement (mrtd, rtmr0..3,
mr_config_id, mr_owner, mr_owner_config, mr_seam) is refused unless it says
"allow_unpinned_measurements": true. Needs the admin role.

A policy file:
  {
    "spiffe_ids": ["spiffe://example.org/ns/ml/sa/loader"],
    "mrtd": ["<96 hex digits>"],
    "allow_debug": false,
    "allowed_tcb_status": ["UpToDate"]
  }
` + connHelp + `

Examples:
  kbsctl policy put --key llama-3-8b --file policy.json
  kbsctl policy get --key llama-3-8b > p.json && $EDITOR p.json && kbsctl policy put --key llama-3-8b --file p.json
`,
		setup: func(fs *flag.FlagSet) action {
			c := &policyPut{}
			c.conn.register(fs)
			fs.StringVar(&c.key, "key", "", "key `ID` the policy governs (required)")
			fs.StringVar(&c.file, "file", "", "policy JSON `FILE`, or - for stdin (required)")
			fs.BoolVar(&c.json, "json", false, "print the stored policy as JSON")
			return c.run
		},
	}
}

func (c *policyPut) run(ctx context.Context, e *env, _ []string) error {
	switch {
	case c.key == "":
		return usagef("put: --key is required: the key whose policy to set")
	case c.file == "":
		return usagef("put: --file is required: the policy as JSON (see 'kbsctl policy put --help')")
	}
	if err := validKeyID("policy put: --key", c.key); err != nil {
		return err
	}
	if _, _, err := c.conn.options(e); err != nil {
		return err
	}
	p, err := readPolicyFile(e, "--file", c.file)
	if err != nil {
		return err
	}
	hint := func(reason string) string {
		if reason == "invalid_argument" {
			return "the key broker refused the policy; fix --file and put it again (nothing was stored)"
		}
		return policyHint(reason)
	}
	resp, err := adminCall(ctx, e, &c.conn, fmt.Sprintf("policy put --key %s --file %s", c.key, c.file), hint,
		func(ctx context.Context, a kbsv1.AdminServiceClient) (*kbsv1.PutPolicyResponse, error) {
			return a.PutPolicy(ctx, &kbsv1.PutPolicyRequest{KeyId: c.key, Policy: p})
		})
	if err != nil {
		return err
	}
	stored := resp.GetPolicy()
	if c.json {
		return printJSON(e.stdout, stored)
	}
	fmt.Fprintf(e.stdout, "stored version %d of the policy of key %s; it applies to every release from now on\n",
		stored.GetVersion(), sanitize(c.key))
	fmt.Fprintf(e.stdout, "spiffe ids: %d, pinned: %s, debug allowed: %t\n",
		len(stored.GetSpiffeIds()), pinnedFields(stored), stored.GetAllowDebug())
	return nil
}
