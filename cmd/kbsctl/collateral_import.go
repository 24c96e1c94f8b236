package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/cml-project/cml/tdx/collateral"
)

type collateralImport struct {
	dir  string
	json bool
}

// collateralImportJSON is one document of the --json output.
type collateralImportJSON struct {
	Document   string    `json:"document"`
	Kind       string    `json:"kind"`
	Param      string    `json:"param,omitempty"`
	Action     string    `json:"action"`
	IssueDate  time.Time `json:"issue_date"`
	NextUpdate time.Time `json:"next_update"`
}

func collateralImportCommand() *command {
	return &command{
		name:     "import",
		synopsis: "SRC --dir DST [--json]",
		args:     []string{"SRC"},
		summary:  "install a TDX collateral bundle (TCB info, QE identity, CRLs) for an offline key broker",
		help: `
Copies the TDX collateral in the directory SRC — TCB info, QE identity, PCK
CRLs and the root CRL, in the collateral directory layout (fetched on a
connected machine, or written by 'kbsctl dev tdxsim init' under
DIR/collateral) — into DST, the directory 'kbs serve --collateral-dir DST'
verifies quotes with, without ever touching the network.

Every document is parsed and checked first and must not be expired; if any
fails, nothing is written. A document older (by issue date) than the one
already in DST is not installed ("kept-newer"), so an old bundle cannot roll
collateral back; identical bytes are "unchanged". Prints each document with
what was done and its validity. Re-import before the earliest "next update",
or the broker denies releases with collateral_expired.

Examples:
  kbsctl collateral import ./collateral-2025-06 --dir /var/lib/kbs/collateral
  kbsctl collateral import ./tdxsim/collateral --dir ./data/collateral --json
`,
		setup: func(fs *flag.FlagSet) action {
			c := &collateralImport{}
			fs.StringVar(&c.dir, "dir", "", "destination `DST`: the broker's --collateral-dir (required)")
			fs.BoolVar(&c.json, "json", false, "print the imported documents as JSON")
			return c.run
		},
	}
}

func (c *collateralImport) run(ctx context.Context, e *env, args []string) error {
	src := args[0]
	if c.dir == "" {
		return usagef("import: --dir is required: the directory the key broker reads collateral from (kbs serve --collateral-dir)")
	}
	if fi, err := os.Stat(src); err != nil {
		return fmt.Errorf("collateral import %s: %w; pass the directory holding the collateral bundle", src, unwrapPathError(err))
	} else if !fi.IsDir() {
		return fmt.Errorf("collateral import %s: not a directory; pass the directory holding the collateral bundle", src)
	}
	now := e.now()
	results, err := collateral.Import(ctx, src, c.dir, now)
	if err != nil {
		fix := "nothing was written"
		switch {
		case errors.Is(err, collateral.ErrExpired):
			fix += "; fetch a fresh bundle"
		case errors.Is(err, collateral.ErrMissing):
			fix += "; SRC must hold the collateral files (tcbinfo-FMSPC.json, qeidentity.json, pckcrl-*.der, rootcrl.der and their issuer chains)"
		}
		return fmt.Errorf("collateral import %s: %s; %s", src, strings.TrimPrefix(err.Error(), "collateral: "), fix)
	}
	if c.json {
		out := make([]collateralImportJSON, len(results))
		for i, r := range results {
			out[i] = collateralImportJSON{
				Document: r.Key.String(), Kind: string(r.Kind), Param: r.Param, Action: string(r.Action),
				IssueDate: r.IssueDate.UTC(), NextUpdate: r.NextUpdate.UTC(),
			}
		}
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "DOCUMENT\tACTION\tISSUED\tNEXT UPDATE")
	var earliest time.Time
	installed := 0
	for _, r := range results {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", sanitize(r.Key.String()), r.Action, formatTime(r.IssueDate), formatTime(r.NextUpdate))
		if earliest.IsZero() || r.NextUpdate.Before(earliest) {
			earliest = r.NextUpdate
		}
		if r.Action == collateral.Installed {
			installed++
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "%s of %d installed in %s; import a fresh bundle before %s (in %s)\n",
		plural(installed, "document"), len(results), c.dir, formatTime(earliest), humanDuration(earliest.Sub(now)))
	return nil
}
