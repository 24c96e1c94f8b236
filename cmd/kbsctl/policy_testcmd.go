package main

// The command is "policy test"; its file cannot be policy_test.go, which Go
// would take for a test file.

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"

	kbsv1 "github.com/cml-project/cml/proto/cml/kbs/v1"
)

// maxQuoteFileSize is the broker's limit on a quote (TestPolicyRequest).
const maxQuoteFileSize = 64 << 10

type policyTest struct {
	conn       connFlags
	key        string
	version    uint
	policyFile string
	quoteFile  string
	spiffeID   string
	kem        string
	json       bool
}

func policyTestCommand() *command {
	return &command{
		name:     "test",
		synopsis: "--key ID --quote FILE --spiffe-id ID [--version N | --policy-file FILE] [--kem KEM] [--json] [connection flags]",
		summary:  "dry-run a policy against a TDX quote and a SPIFFE ID: every check, PASS or FAIL",
		help: `
Asks the key broker to evaluate the key's release policy (the current
version, --version N, or the draft in --policy-file, which is validated but
not stored) against the TDX quote in --quote and the workload SPIFFE ID
--spiffe-id, without releasing anything. The broker verifies the quote as
for a release, except REPORTDATA (there is no nonce), then runs every
check and reports each one: PASS or FAIL, the reason code of a failure, and
what the policy expected and the quote or caller presented. A quote that
fails verification is a failed "quote" check. Needs the admin or auditor
role.

--quote is a raw TDX quote (binary, at most 64 KiB): from the TD
(configfs-tsm), or from 'kbsctl dev tdxsim quote'. --kem x25519 or
mlkem768x25519 also runs the policy's KEM check. With --policy-file, --key
is optional and only labels the output.

Exit status: 0 if the policy allows, 3 if it denies.
` + connHelp + `

Examples:
  kbsctl policy test --key llama-3-8b --quote td.quote --spiffe-id spiffe://example.org/loader
  kbsctl policy test --policy-file draft.json --quote td.quote --spiffe-id spiffe://example.org/loader
  kbsctl policy test --key llama-3-8b --quote td.quote --spiffe-id spiffe://example.org/loader --json | jq .reason_codes
`,
		setup: func(fs *flag.FlagSet) action {
			c := &policyTest{}
			c.conn.register(fs)
			fs.StringVar(&c.key, "key", "", "key `ID` whose stored policy to test (required without --policy-file)")
			fs.UintVar(&c.version, "version", 0, "stored policy version `N` (default: the current one)")
			fs.StringVar(&c.policyFile, "policy-file", "", "test the draft policy in this JSON `FILE` instead (not stored)")
			fs.StringVar(&c.quoteFile, "quote", "", "raw TDX quote `FILE` (required)")
			fs.StringVar(&c.spiffeID, "spiffe-id", "", "workload SPIFFE `ID` to test, e.g. spiffe://example.org/loader (required)")
			fs.StringVar(&c.kem, "kem", "", "HPKE `KEM` the workload would use: x25519 or mlkem768x25519 (default: skip the kem check)")
			fs.BoolVar(&c.json, "json", false, "print the TestPolicyResponse as JSON (the exit status still says allow or deny)")
			return c.run
		},
	}
}

// kemByName maps --kem values to the enum.
var kemByName = map[string]kbsv1.HpkeKem{
	"":               kbsv1.HpkeKem_HPKE_KEM_UNSPECIFIED,
	"x25519":         kbsv1.HpkeKem_HPKE_KEM_DHKEM_X25519_HKDF_SHA256,
	"mlkem768x25519": kbsv1.HpkeKem_HPKE_KEM_MLKEM768_X25519,
}

func (c *policyTest) run(ctx context.Context, e *env, _ []string) error {
	switch {
	case c.key == "" && c.policyFile == "":
		return usagef("test: --key (the stored policy) or --policy-file (a draft) is required")
	case c.quoteFile == "":
		return usagef("test: --quote is required: a raw TDX quote file, e.g. from 'kbsctl dev tdxsim quote'")
	case c.spiffeID == "":
		return usagef("test: --spiffe-id is required: the workload's SPIFFE ID, e.g. spiffe://example.org/loader")
	case c.policyFile != "" && c.version != 0:
		return usagef("test: --version names a stored policy; it cannot be given with --policy-file")
	}
	if c.key != "" {
		if err := validKeyID("policy test: --key", c.key); err != nil {
			return err
		}
	}
	if !strings.HasPrefix(c.spiffeID, "spiffe://") {
		return usagef("test: --spiffe-id %q: want a SPIFFE ID, spiffe://TRUST-DOMAIN/PATH", c.spiffeID)
	}
	kem, ok := kemByName[strings.ToLower(c.kem)]
	if !ok {
		return usagef("test: --kem %q: want x25519 or mlkem768x25519", c.kem)
	}
	version, err := versionFlag("version", c.version)
	if err != nil {
		return err
	}
	if _, _, err := c.conn.options(e); err != nil {
		return err
	}
	quote, err := readQuoteFile(c.quoteFile)
	if err != nil {
		return err
	}
	req := &kbsv1.TestPolicyRequest{Quote: quote, SpiffeId: c.spiffeID, KemId: kem}
	label := ""
	if c.policyFile != "" {
		if req.Policy, err = readPolicyFile(e, "--policy-file", c.policyFile); err != nil {
			return err
		}
		label = "draft policy " + c.policyFile + " (not stored)"
		if c.key != "" {
			label += " for key " + c.key
		}
	} else {
		req.KeyId, req.PolicyVersion = c.key, version
	}

	op := "policy test"
	if c.key != "" {
		op += " --key " + c.key
	}
	hint := func(reason string) string {
		if reason == "invalid_argument" && c.policyFile != "" {
			return "fix the draft in --policy-file"
		}
		return policyHint(reason)
	}
	resp, err := adminCall(ctx, e, &c.conn, op, hint,
		func(ctx context.Context, a kbsv1.AdminServiceClient) (*kbsv1.TestPolicyResponse, error) {
			return a.TestPolicy(ctx, req)
		})
	if err != nil {
		return err
	}
	if label == "" {
		label = fmt.Sprintf("version %d of the policy of key %s", resp.GetPolicyVersion(), c.key)
	}
	allowed := resp.GetDecision() == kbsv1.Decision_DECISION_ALLOW
	if c.json {
		if err := printJSON(e.stdout, resp); err != nil {
			return err
		}
	} else {
		printPolicyTest(e.stdout, label, c.spiffeID, resp)
	}
	if !allowed {
		reasons := strings.Join(resp.GetReasonCodes(), ", ")
		if reasons == "" {
			reasons = "no reason given" // a decision other than allow is a denial
		}
		return &codedError{code: exitRefused, err: fmt.Errorf("policy test: denied by %s: %s", sanitize(label), sanitize(reasons))}
	}
	return nil
}

// printPolicyTest prints a dry run for people: one line per check, with
// what was expected and presented, then the decision.
func printPolicyTest(w io.Writer, label, caller string, resp *kbsv1.TestPolicyResponse) {
	fmt.Fprintf(w, "policy: %s\n", sanitize(label))
	fmt.Fprintf(w, "caller: %s\n", sanitize(caller))
	if resp.GetSimulated() {
		fmt.Fprintln(w, "quote:  verified against the TDX SIMULATOR's root: development only, proves nothing about real hardware")
	}
	if cl := resp.GetTdClaims(); cl != nil {
		fmt.Fprintf(w, "td:     mrtd %s, debug %t, tcb status %s\n", sanitize(cl.GetMrtd()), cl.GetDebug(), orDash(sanitize(cl.GetTcbStatus())))
	}
	fmt.Fprintln(w)
	for _, ch := range resp.GetChecks() {
		result := "PASS"
		if !ch.GetPassed() {
			result = "FAIL"
		}
		line := fmt.Sprintf("%s  %s", result, sanitize(ch.GetName()))
		if r := ch.GetReasonCode(); r != "" {
			line += "  " + sanitize(r)
		}
		fmt.Fprintln(w, line)
		if x := ch.GetExpected(); x != "" {
			fmt.Fprintf(w, "      expected: %s\n", sanitize(x))
		}
		if a := ch.GetActual(); a != "" {
			fmt.Fprintf(w, "      actual:   %s\n", sanitize(a))
		}
	}
	fmt.Fprintln(w)
	if resp.GetDecision() == kbsv1.Decision_DECISION_ALLOW {
		fmt.Fprintln(w, "decision: ALLOW")
	} else {
		fmt.Fprintf(w, "decision: DENY (%s)\n", sanitize(strings.Join(resp.GetReasonCodes(), ", ")))
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// readQuoteFile reads a raw quote, bounded by the broker's limit.
func readQuoteFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("--quote %s: no such file; get a quote from the TD, or a simulated one with 'kbsctl dev tdxsim quote'", path)
	}
	if err != nil {
		return nil, fmt.Errorf("--quote %s: %w", path, unwrapPathError(err))
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxQuoteFileSize+1))
	switch {
	case err != nil:
		return nil, fmt.Errorf("--quote %s: %w", path, unwrapPathError(err))
	case len(data) == 0:
		return nil, fmt.Errorf("--quote %s: the file is empty; a quote is the raw binary TDX quote", path)
	case len(data) > maxQuoteFileSize:
		return nil, fmt.Errorf("--quote %s: larger than %d bytes, the limit of a quote; is this a raw binary TDX quote?", path, maxQuoteFileSize)
	}
	return data, nil
}
