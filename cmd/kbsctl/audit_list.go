package main

import (
	"context"
	"flag"
	"fmt"
	"strings"
	"text/tabwriter"

	"google.golang.org/protobuf/types/known/timestamppb"

	kbsv1 "github.com/cml-project/cml/proto/cml/kbs/v1"
)

// maxPageSize is the largest page the broker returns.
const maxPageSize = 1000

type auditList struct {
	conn     connFlags
	key      string
	decision string
	since    string
	until    string
	limit    int
	pageSize int
	json     bool
}

func auditListCommand() *command {
	return &command{
		name:     "list",
		synopsis: "[--key ID] [--decision allow|deny] [--since T] [--until T] [--limit N] [--json] [connection flags]",
		summary:  "list audit records: who did what to which key, allowed or denied, and why",
		help: `
Lists the key broker's audit records in sequence order, one line each:
sequence number, time (UTC), caller SPIFFE ID, operation, key@version,
decision ("(sim)" marks a quote verified against the TDX simulator) and
reason codes. Every page is fetched, up to --limit records. Needs the admin
or auditor role.

--since and --until take an RFC 3339 time (2025-01-31T12:00:00Z), a date
(2025-01-31, midnight UTC) or a duration meaning that long ago (24h);
--since is inclusive, --until exclusive.

--json prints {"records": [AuditRecord, ...]} with proto field names,
including the measurements, quote digest and hash chain of each record.
` + connHelp + `

Examples:
  kbsctl audit list --key llama-3-8b --decision deny --since 24h
  kbsctl audit list --limit 20
  kbsctl audit list --json | jq -r '.records[] | [.sequence, .operation] | @tsv'
`,
		setup: func(fs *flag.FlagSet) action {
			c := &auditList{}
			c.conn.register(fs)
			fs.StringVar(&c.key, "key", "", "only records about key `ID`")
			fs.StringVar(&c.decision, "decision", "", "only records with this `DECISION`: allow or deny")
			fs.StringVar(&c.since, "since", "", "only records at or after `T`")
			fs.StringVar(&c.until, "until", "", "only records before `T`")
			fs.IntVar(&c.limit, "limit", 0, "print at most `N` records (default: all)")
			fs.IntVar(&c.pageSize, "page-size", maxPageSize, "records fetched per call, `N` (1 to 1000)")
			fs.BoolVar(&c.json, "json", false, "print the records as JSON")
			return c.run
		},
	}
}

func (c *auditList) run(ctx context.Context, e *env, _ []string) error {
	req := &kbsv1.ListAuditRecordsRequest{KeyId: c.key}
	if c.key != "" {
		if err := validKeyID("audit list: --key", c.key); err != nil {
			return err
		}
	}
	switch strings.ToLower(c.decision) {
	case "":
	case "allow":
		req.Decision = kbsv1.Decision_DECISION_ALLOW
	case "deny":
		req.Decision = kbsv1.Decision_DECISION_DENY
	default:
		return usagef("list: --decision %q: want allow or deny", c.decision)
	}
	now := e.now()
	if c.since != "" {
		t, err := parseTimeFlag("since", c.since, now)
		if err != nil {
			return err
		}
		req.StartTime = timestamppb.New(t)
	}
	if c.until != "" {
		t, err := parseTimeFlag("until", c.until, now)
		if err != nil {
			return err
		}
		req.EndTime = timestamppb.New(t)
	}
	if req.StartTime != nil && req.EndTime != nil && !req.StartTime.AsTime().Before(req.EndTime.AsTime()) {
		return usagef("list: --since %s is not before --until %s", c.since, c.until)
	}
	if c.limit < 0 {
		return usagef("list: --limit %d: want 0 (all) or more", c.limit)
	}
	if c.pageSize < 1 || c.pageSize > maxPageSize {
		return usagef("list: --page-size %d: want 1 to %d", c.pageSize, maxPageSize)
	}

	kc, err := c.conn.dial(ctx, e)
	if err != nil {
		return err
	}
	defer kc.Close()
	all := &kbsv1.ListAuditRecordsResponse{}
	for {
		req.PageSize = int32(c.pageSize)
		if c.limit > 0 {
			req.PageSize = int32(min(c.pageSize, c.limit-len(all.Records)))
		}
		cctx, cancel := kc.call(ctx)
		resp, err := kc.Admin().ListAuditRecords(cctx, req)
		cancel()
		if err != nil {
			return kc.explain(ctx, "audit list", err, nil)
		}
		all.Records = append(all.Records, resp.GetRecords()...)
		if c.limit > 0 && len(all.Records) >= c.limit {
			all.Records = all.Records[:c.limit]
			break
		}
		if req.PageToken = resp.GetNextPageToken(); req.PageToken == "" {
			break
		}
	}
	if c.json {
		return printJSON(e.stdout, all)
	}
	if len(all.Records) == 0 {
		fmt.Fprintln(e.stdout, "no audit records match")
		return nil
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SEQ\tTIME\tCALLER\tOP\tKEY@VER\tDECISION\tREASONS")
	for _, r := range all.Records {
		key := "-"
		if r.GetKeyId() != "" {
			key = r.GetKeyId()
			if v := r.GetKeyVersion(); v != 0 {
				key = fmt.Sprintf("%s@%d", key, v)
			}
		}
		decision := enumWord(r.GetDecision(), "DECISION_")
		if r.GetSimulated() {
			decision += " (sim)"
		}
		reasons := strings.Join(r.GetReasonCodes(), ",")
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\n", r.GetSequence(), formatTS(r.GetTime()),
			orDash(sanitize(r.GetCallerSpiffeId())), sanitize(r.GetOperation()), sanitize(key), decision, orDash(sanitize(reasons)))
	}
	return tw.Flush()
}
