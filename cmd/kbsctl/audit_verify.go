package main

import (
	"context"
	"flag"
	"fmt"

	kbsv1 "github.com/cml-project/cml/proto/cml/kbs/v1"
)

type auditVerify struct {
	conn connFlags
	json bool
}

func auditVerifyCommand() *command {
	return &command{
		name:     "verify",
		synopsis: "[--json] [connection flags]",
		summary:  "check the audit log's hash chain: no record edited, reordered or deleted",
		help: `
Asks the key broker to walk its whole audit log, recompute the SHA-256 hash
chain and compare its end with the authenticated head it keeps. If the log
is intact, prints the number of records checked and the head (sequence and
hash: keep it, a later verification must extend it) and exits 0. If not,
names the first bad sequence number and why — malformed, bad_genesis, gap
(records deleted), reordered, modified, truncated (records deleted at the
end) or beyond_head — and exits 3. Needs the admin or auditor role.
` + connHelp + `

Examples:
  kbsctl audit verify
  kbsctl audit verify --json | jq -r .head_hash
`,
		setup: func(fs *flag.FlagSet) action {
			c := &auditVerify{}
			c.conn.register(fs)
			fs.BoolVar(&c.json, "json", false, "print the VerifyAuditLogResponse as JSON (the exit status still says ok or broken)")
			return c.run
		},
	}
}

func (c *auditVerify) run(ctx context.Context, e *env, _ []string) error {
	// Walking a long log takes longer than one ordinary call; the caller's
	// --timeout still bounds it.
	resp, err := adminCall(ctx, e, &c.conn, "audit verify", nil,
		func(ctx context.Context, a kbsv1.AdminServiceClient) (*kbsv1.VerifyAuditLogResponse, error) {
			return a.VerifyAuditLog(ctx, &kbsv1.VerifyAuditLogRequest{})
		})
	if err != nil {
		return err
	}
	if c.json {
		if err := printJSON(e.stdout, resp); err != nil {
			return err
		}
	}
	if !resp.GetOk() {
		msg := fmt.Sprintf("audit verify: the audit log is BROKEN at sequence %d: %s", resp.GetFirstBadSequence(), sanitize(orDash(resp.GetFailure())))
		if d := resp.GetDetail(); d != "" {
			msg += " (" + sanitize(d) + ")"
		}
		msg += fmt.Sprintf("; %s before it verified. Keep the broker's data directory as evidence and compare with a backup", plural(int(resp.GetRecordsChecked()), "record"))
		if !c.json {
			fmt.Fprintf(e.stdout, "audit log BROKEN at sequence %d: %s\n", resp.GetFirstBadSequence(), sanitize(orDash(resp.GetFailure())))
		}
		return &codedError{code: exitRefused, err: fmt.Errorf("%s", msg)}
	}
	if c.json {
		return nil
	}
	if resp.GetHeadSequence() == 0 {
		fmt.Fprintln(e.stdout, "audit log OK: empty")
		return nil
	}
	fmt.Fprintf(e.stdout, "audit log OK: %s checked\n", plural(int(resp.GetRecordsChecked()), "record"))
	fmt.Fprintf(e.stdout, "head: sequence %d, hash %s\n", resp.GetHeadSequence(), sanitize(resp.GetHeadHash()))
	fmt.Fprintf(e.stdout, "records from %s to %s\n", formatTS(resp.GetFirstTime()), formatTS(resp.GetLastTime()))
	return nil
}
