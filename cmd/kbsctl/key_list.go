package main

import (
	"context"
	"flag"
	"fmt"
	"strings"
	"text/tabwriter"

	kbsv1 "github.com/cml-project/cml/proto/cml/kbs/v1"
)

type keyList struct {
	conn connFlags
	json bool
}

func keyListCommand() *command {
	return &command{
		name:     "list",
		synopsis: "[--json] [connection flags]",
		summary:  "list every key with its state, primary version and policy version",
		help: `
Lists every key of the key broker, ordered by key id: state, primary
version, number of versions, policy version, last update and description.
All pages are fetched. Needs the admin or auditor role.

--json prints {"keys": [KeyMetadata, ...]} with proto field names.
` + connHelp + `

Examples:
  kbsctl key list
  kbsctl key list --json | jq -r '.keys[] | select(.policy_version == null) | .key_id'
`,
		setup: func(fs *flag.FlagSet) action {
			c := &keyList{}
			c.conn.register(fs)
			fs.BoolVar(&c.json, "json", false, "print the keys as JSON")
			return c.run
		},
	}
}

func (c *keyList) run(ctx context.Context, e *env, _ []string) error {
	kc, err := c.conn.dial(ctx, e)
	if err != nil {
		return err
	}
	defer kc.Close()
	all := &kbsv1.ListKeysResponse{}
	token := ""
	for {
		cctx, cancel := kc.call(ctx)
		resp, err := kc.Admin().ListKeys(cctx, &kbsv1.ListKeysRequest{PageSize: 1000, PageToken: token})
		cancel()
		if err != nil {
			return kc.explain(ctx, "key list", err, nil)
		}
		all.Keys = append(all.Keys, resp.GetKeys()...)
		if token = resp.GetNextPageToken(); token == "" {
			break
		}
	}
	if c.json {
		return printJSON(e.stdout, all)
	}
	if len(all.Keys) == 0 {
		fmt.Fprintln(e.stdout, "no keys; create one with 'kbsctl key create ID'")
		return nil
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "KEY\tSTATE\tPRIMARY\tVERSIONS\tPOLICY\tUPDATED\tDESCRIPTION")
	for _, k := range all.Keys {
		pol := "-"
		if v := k.GetPolicyVersion(); v != 0 {
			pol = fmt.Sprint(v)
		}
		desc := orDash(k.GetDescription())
		if r := []rune(desc); len(r) > 40 {
			desc = strings.TrimRight(string(r[:39]), " ") + "…"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%s\t%s\n", sanitize(k.GetKeyId()), keyState(k.GetState()), k.GetPrimaryVersion(),
			len(k.GetVersions()), pol, formatTS(k.GetUpdateTime()), sanitize(desc))
	}
	return tw.Flush()
}
