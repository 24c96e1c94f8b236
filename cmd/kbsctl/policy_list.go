package main

import (
	"context"
	"flag"
	"fmt"
	"text/tabwriter"

	kbsv1 "github.com/cml-project/cml/proto/cml/kbs/v1"
)

type policyList struct {
	conn connFlags
	key  string
	json bool
}

func policyListCommand() *command {
	return &command{
		name:     "list",
		synopsis: "[--key ID] [--json] [connection flags]",
		summary:  "list the versions of a key's policy, or the current policy of every key",
		help: `
With --key, lists every version of that key's release policy, newest first;
without, the current policy of every key that has one. Each line shows who
stored it and when, how many SPIFFE IDs it allows, which TD measurements it
pins and whether it allows debug TDs. All pages are fetched. Needs the
admin or auditor role.

--json prints {"policies": [Policy, ...]} with proto field names.
` + connHelp + `

Examples:
  kbsctl policy list --key llama-3-8b
  kbsctl policy list --json
`,
		setup: func(fs *flag.FlagSet) action {
			c := &policyList{}
			c.conn.register(fs)
			fs.StringVar(&c.key, "key", "", "list the versions of this key `ID`'s policy (default: every key's current policy)")
			fs.BoolVar(&c.json, "json", false, "print the policies as JSON")
			return c.run
		},
	}
}

func (c *policyList) run(ctx context.Context, e *env, _ []string) error {
	if c.key != "" {
		if err := validKeyID("policy list: --key", c.key); err != nil {
			return err
		}
	}
	kc, err := c.conn.dial(ctx, e)
	if err != nil {
		return err
	}
	defer kc.Close()
	all := &kbsv1.ListPoliciesResponse{}
	token := ""
	for {
		cctx, cancel := kc.call(ctx)
		resp, err := kc.Admin().ListPolicies(cctx, &kbsv1.ListPoliciesRequest{KeyId: c.key, PageSize: 1000, PageToken: token})
		cancel()
		if err != nil {
			op := "policy list"
			if c.key != "" {
				op += " --key " + c.key
			}
			return kc.explain(ctx, op, err, policyHint)
		}
		all.Policies = append(all.Policies, resp.GetPolicies()...)
		if token = resp.GetNextPageToken(); token == "" {
			break
		}
	}
	if c.json {
		return printJSON(e.stdout, all)
	}
	if len(all.Policies) == 0 {
		if c.key != "" {
			fmt.Fprintf(e.stdout, "key %s has no policy; every release is denied until 'kbsctl policy put --key %s --file policy.json'\n", sanitize(c.key), sanitize(c.key))
		} else {
			fmt.Fprintln(e.stdout, "no key has a policy yet")
		}
		return nil
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "KEY\tVERSION\tCREATED\tCREATED BY\tSPIFFE IDS\tPINNED\tDEBUG")
	for _, p := range all.Policies {
		debug := "denied"
		if p.GetAllowDebug() {
			debug = "allowed"
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%d\t%s\t%s\n", sanitize(p.GetKeyId()), p.GetVersion(), formatTS(p.GetCreateTime()),
			sanitize(p.GetCreatedBy()), len(p.GetSpiffeIds()), pinnedFields(p), debug)
	}
	return tw.Flush()
}
