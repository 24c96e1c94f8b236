package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/cml-project/cml/identity/devca"
)

type devCerts struct {
	trustDomain string
	ids         listFlag
	ttl         time.Duration
}

// devOnlyBanner is printed on stderr by every dev command.
const devOnlyBanner = "kbsctl: DEVELOPMENT ONLY: %s; never use it in production\n"

func devCertsCommand() *command {
	return &command{
		name:     "certs",
		synopsis: "DIR --trust-domain TD --id NAME [--id NAME]... [--ttl DURATION]",
		args:     []string{"DIR"},
		summary:  "DEVELOPMENT ONLY: a SPIFFE CA and X.509-SVID files for setups without SPIRE",
		help: `
DEVELOPMENT ONLY. Creates a SPIFFE certificate authority for the trust
domain TD in DIR and an X.509-SVID for spiffe://TD/NAME for every --id,
as PEM files that kbs, kbsctl and the loader read with --svid-cert,
--svid-key and --bundle:

  DIR/ca.pem             the trust bundle (give it to --bundle)
  DIR/ca-key.pem         the CA's private key (mode 0600)
  DIR/NAME.pem           the X.509-SVID of spiffe://TD/NAME
  DIR/NAME-key.pem       its private key (mode 0600)

If DIR already holds a CA (ca.pem), the new SVIDs are issued by it and
--trust-domain, if given, must match it: that is how to add an identity
later, e.g. the demo's "intruder". Existing files are never overwritten,
and a run that fails writes nothing. A NAME is one or more "/"-separated
segments of [a-z0-9-]; "/" becomes "_" in file names.

The CA key is an ordinary file, nothing is audited or revocable, and
nothing attests the workloads: production identities come from a SPIRE
server through the agent's Workload API (--spiffe-socket).

Examples:
  kbsctl dev certs ./certs --trust-domain example.org --id kbs --id loader --id admin
  kbsctl dev certs ./certs --id intruder --ttl 1h
`,
		setup: func(fs *flag.FlagSet) action {
			c := &devCerts{}
			fs.StringVar(&c.trustDomain, "trust-domain", "", "trust `TD` of a new CA, e.g. example.org (required unless DIR holds a CA)")
			fs.Var(&c.ids, "id", "identity `NAME`: an SVID for spiffe://TD/NAME; repeat for several (at least one)")
			fs.DurationVar(&c.ttl, "ttl", devca.DefaultSVIDTTL, "lifetime of each SVID, `DURATION`")
			return c.run
		},
	}
}

func (c *devCerts) run(_ context.Context, e *env, args []string) error {
	dir := args[0]
	if len(c.ids) == 0 {
		return usagef("certs: at least one --id NAME is required, e.g. --id kbs --id loader --id admin")
	}
	if c.ttl <= 0 {
		return usagef("certs: --ttl %s: want a positive duration, e.g. 24h", c.ttl)
	}
	for _, name := range c.ids {
		if err := devca.ValidateName(name); err != nil {
			return usagef("certs: --id %q: %v", name, strings.TrimPrefix(err.Error(), "devca: "))
		}
	}
	var td spiffeid.TrustDomain
	if c.trustDomain != "" {
		var err error
		if td, err = spiffeid.TrustDomainFromString(c.trustDomain); err != nil {
			return usagef("certs: --trust-domain %q: %v; want a name such as example.org", c.trustDomain, err)
		}
	} else if _, err := os.Lstat(filepath.Join(dir, devca.BundleFile)); errors.Is(err, fs.ErrNotExist) {
		return usagef("certs: --trust-domain is required: %s holds no CA yet", dir)
	}
	fmt.Fprintf(e.stderr, devOnlyBanner, "a file-based SPIFFE CA without attestation or revocation")
	written, err := devca.WriteOrExtendDir(dir, td, c.ids, c.ttl)
	if err != nil {
		return fmt.Errorf("dev certs %s: %s; nothing was written (existing files are never overwritten: choose new --id names or another DIR)",
			dir, strings.TrimPrefix(err.Error(), "devca: "))
	}
	ca, err := devca.LoadDir(dir, devca.Options{})
	if err != nil {
		return fmt.Errorf("dev certs %s: %w", dir, err)
	}
	for _, p := range written {
		fmt.Fprintf(e.stdout, "wrote %s\n", p)
	}
	for _, name := range c.ids {
		id, err := devca.IDForName(ca.TrustDomain(), name)
		if err != nil {
			return fmt.Errorf("dev certs %s: %w", dir, err)
		}
		cert, key, err := devca.SVIDFiles(name)
		if err != nil {
			return fmt.Errorf("dev certs %s: %w", dir, err)
		}
		fmt.Fprintf(e.stdout, "%s: --svid-cert %s --svid-key %s --bundle %s (valid %s)\n", id,
			filepath.Join(dir, cert), filepath.Join(dir, key), filepath.Join(dir, devca.BundleFile), humanDuration(c.ttl))
	}
	return nil
}
