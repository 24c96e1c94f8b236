package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	"github.com/cml-project/cml/tdx/tdxsim"
)

type devTdxsimInit struct {
	mrtd      string
	rtmr      [4]string
	debug     bool
	tcbStatus string
	revokePCK bool
	json      bool
}

// tcbStatuses are the values of --tcb-status, as Intel spells them.
var tcbStatuses = []string{
	tdxsim.UpToDate, tdxsim.SWHardeningNeeded, tdxsim.ConfigurationNeeded,
	tdxsim.ConfigurationAndSWHardeningNeeded, tdxsim.OutOfDate,
	tdxsim.OutOfDateConfigurationNeeded, tdxsim.Revoked,
}

// tdxsimInitJSON is the --json output of 'kbsctl dev tdxsim init'.
type tdxsimInitJSON struct {
	Dir        string        `json:"dir"`
	Root       string        `json:"root"`
	Collateral string        `json:"collateral"`
	TCBStatus  string        `json:"tcb_status"`
	TD         tdxsim.TDJSON `json:"td"`
}

func devTdxsimInitCommand() *command {
	return &command{
		name:     "tdxsim init",
		synopsis: "DIR [--mrtd HEX] [--rtmr0 HEX]... [--debug] [--tcb-status STATUS] [--revoke-pck] [--json]",
		args:     []string{"DIR"},
		summary:  "DEVELOPMENT ONLY: create a simulated TDX platform (test root CA, collateral, default TD)",
		help: `
DEVELOPMENT ONLY. Creates a simulated Intel TDX platform in DIR (which must
not exist or be empty), so the demo and tests exercise the real quote
verification without TDX hardware:

  DIR/tdxsim.json     platform, default TD measurements, TCB status
  DIR/root.pem        the simulator's root CA: trust it only explicitly
  DIR/pck-chain.pem   PCK certificate chain
  DIR/keys/           private keys (mode 0600), including the root's
  DIR/collateral/     signed TCB info, QE identity and CRLs

The key broker trusts the simulator only when started with
'kbs serve --dev-insecure-simulated-tdx DIR', which marks every audit
record simulated; the loader simulates quotes with the same DIR.

The default TD's measurements are fixed, recognisable values (SHA-384 of a
label); --mrtd and --rtmr0..--rtmr3 (96 hex digits each) replace them,
--debug sets its DEBUG attribute. --tcb-status is the status the
collateral gives the platform (Intel's spelling; default UpToDate).
--revoke-pck lists the PCK certificate in the PCK CRL.

Examples:
  kbsctl dev tdxsim init ./tdxsim
  kbsctl dev tdxsim init ./tdxsim-old --tcb-status OutOfDate --json | jq -r .td.mrtd
`,
		setup: func(fs *flag.FlagSet) action {
			c := &devTdxsimInit{}
			fs.StringVar(&c.mrtd, "mrtd", "", "MRTD of the default TD, 96 `HEX` digits")
			for i := range c.rtmr {
				fs.StringVar(&c.rtmr[i], fmt.Sprintf("rtmr%d", i), "", fmt.Sprintf("RTMR%d of the default TD, 96 `HEX` digits", i))
			}
			fs.BoolVar(&c.debug, "debug", false, "the default TD has the DEBUG attribute")
			fs.StringVar(&c.tcbStatus, "tcb-status", tdxsim.UpToDate, "TCB `STATUS` of the platform: "+strings.Join(tcbStatuses, ", "))
			fs.BoolVar(&c.revokePCK, "revoke-pck", false, "revoke the platform's PCK certificate in the PCK CRL")
			fs.BoolVar(&c.json, "json", false, "print the directory, root, TCB status and default TD as JSON")
			return c.run
		},
	}
}

func (c *devTdxsimInit) run(_ context.Context, e *env, args []string) error {
	dir := args[0]
	if !slices.Contains(tcbStatuses, c.tcbStatus) {
		return usagef("tdxsim init: --tcb-status %q: want one of %s", c.tcbStatus, strings.Join(tcbStatuses, ", "))
	}
	td := tdxsim.DefaultTDParams()
	if err := setMeasurement(&td.MRTD, "mrtd", c.mrtd); err != nil {
		return err
	}
	for i := range c.rtmr {
		if err := setMeasurement(&td.RTMR[i], fmt.Sprintf("rtmr%d", i), c.rtmr[i]); err != nil {
			return err
		}
	}
	td.Debug = c.debug
	fmt.Fprintf(e.stderr, devOnlyBanner, "a simulated TDX platform whose root key is a file")
	sim, err := tdxsim.Init(dir, tdxsim.Options{Now: e.now(), TCBStatus: c.tcbStatus, RevokePCK: c.revokePCK, TD: &td})
	if err != nil {
		return fmt.Errorf("dev tdxsim init %s: %s; choose a DIR that does not exist or is empty", dir, strings.TrimPrefix(err.Error(), "tdxsim: "))
	}
	out := tdxsimInitJSON{
		Dir:        dir,
		Root:       filepath.Join(dir, tdxsim.RootFile),
		Collateral: filepath.Join(dir, tdxsim.CollateralDir),
		TCBStatus:  sim.TCBStatus(),
		TD:         sim.DefaultTD().JSON(),
	}
	if c.json {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	fmt.Fprintf(e.stdout, "created a simulated TDX platform in %s (TCB status %s)\n", dir, out.TCBStatus)
	fmt.Fprintf(e.stdout, "root CA:    %s (trust it only with 'kbs serve --dev-insecure-simulated-tdx %s')\n", out.Root, dir)
	fmt.Fprintf(e.stdout, "collateral: %s\n", out.Collateral)
	fmt.Fprintln(e.stdout, "default TD:")
	fmt.Fprintf(e.stdout, "  mrtd:  %s\n", out.TD.MRTD)
	for i, r := range out.TD.RTMR {
		fmt.Fprintf(e.stdout, "  rtmr%d: %s\n", i, r)
	}
	fmt.Fprintf(e.stdout, "  debug: %t\n", out.TD.Debug)
	return nil
}

// setMeasurement parses a 48-byte hex flag into dst, leaving dst as it is
// when the flag is empty.
func setMeasurement(dst *[48]byte, name, value string) error {
	b, err := parseHexFlag(name, value, len(dst))
	if err != nil || b == nil {
		return err
	}
	copy(dst[:], b)
	return nil
}
