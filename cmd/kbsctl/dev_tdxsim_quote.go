package main

import (
	"context"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"strings"

	"github.com/cml-project/cml/tdx/tdxsim"
)

type devTdxsimQuote struct {
	dir        string
	reportData string
	mrtd       string
	debug      optBool
	out        string
}

func devTdxsimQuoteCommand() *command {
	return &command{
		name:     "tdxsim quote",
		synopsis: "--dir DIR --out FILE [--report-data HEX] [--mrtd HEX] [--debug[=false]]",
		summary:  "DEVELOPMENT ONLY: write a simulated TDX quote, e.g. for 'kbsctl policy test'",
		help: `
DEVELOPMENT ONLY. Writes a TDX quote (version 4, raw binary) produced by the
simulated platform in --dir (from 'kbsctl dev tdxsim init') to --out, which
must not exist. The quote is for the platform's default TD, with --mrtd
replacing its MRTD (96 hex digits) and --debug or --debug=false setting its
DEBUG attribute — handy to see a policy deny another TD
(mrtd_not_allowed) or a debug TD (debug_td).

--report-data is the quote's REPORTDATA: at most 64 bytes as hex, padded
with zero bytes (default all zero). 'kbsctl policy test' does not check it;
a real release binds it to the broker's nonce and the loader's key.

Examples:
  kbsctl dev tdxsim quote --dir ./tdxsim --out td.quote
  kbsctl dev tdxsim quote --dir ./tdxsim --out other.quote --mrtd $(printf 'ab%.0s' $(seq 48))
`,
		setup: func(fs *flag.FlagSet) action {
			c := &devTdxsimQuote{}
			fs.StringVar(&c.dir, "dir", "", "simulator `DIR` written by 'kbsctl dev tdxsim init' (required)")
			fs.StringVar(&c.out, "out", "", "output `FILE` for the raw quote; must not exist (required)")
			fs.StringVar(&c.reportData, "report-data", "", "REPORTDATA as up to 128 `HEX` digits, zero-padded (default all zero)")
			fs.StringVar(&c.mrtd, "mrtd", "", "MRTD to report instead of the default TD's, 96 `HEX` digits")
			fs.Var(&c.debug, "debug", "set (or with =false clear) the TD's DEBUG attribute (default: as the default TD)")
			return c.run
		},
	}
}

func (c *devTdxsimQuote) run(_ context.Context, e *env, _ []string) error {
	switch {
	case c.dir == "":
		return usagef("tdxsim quote: --dir is required: a directory written by 'kbsctl dev tdxsim init DIR'")
	case c.out == "":
		return usagef("tdxsim quote: --out is required: the file to write the quote to")
	}
	var rd [64]byte
	if c.reportData != "" {
		t := strings.TrimPrefix(strings.TrimPrefix(c.reportData, "0x"), "0X")
		b, err := hex.DecodeString(t)
		switch {
		case err != nil:
			return usagef("tdxsim quote: --report-data: not hex (%v)", err)
		case len(b) > len(rd):
			return usagef("tdxsim quote: --report-data: %d bytes, at most %d (128 hex digits)", len(b), len(rd))
		}
		copy(rd[:], b)
	}
	var mrtd [48]byte
	if err := setMeasurement(&mrtd, "mrtd", c.mrtd); err != nil {
		return err
	}
	sim, err := tdxsim.Load(c.dir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("tdxsim quote: --dir %s: %s; create it with 'kbsctl dev tdxsim init %s'", c.dir, strings.TrimPrefix(err.Error(), "tdxsim: "), c.dir)
		}
		return fmt.Errorf("tdxsim quote: --dir %s: %s", c.dir, strings.TrimPrefix(err.Error(), "tdxsim: "))
	}
	td := sim.DefaultTD()
	if c.mrtd != "" {
		td.MRTD = mrtd
	}
	if c.debug.set {
		td.Debug = c.debug.value
	}
	quote, err := sim.Quote(rd, td)
	if err != nil {
		return fmt.Errorf("tdxsim quote: %s", strings.TrimPrefix(err.Error(), "tdxsim: "))
	}
	fmt.Fprintf(e.stderr, devOnlyBanner, "a quote from the TDX simulator proves nothing about real hardware")
	f, err := os.OpenFile(c.out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("tdxsim quote: --out %s exists; remove it or choose another file", c.out)
	}
	if err != nil {
		return fmt.Errorf("tdxsim quote: --out %s: %w", c.out, unwrapPathError(err))
	}
	_, err = f.Write(quote)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(c.out)
		return fmt.Errorf("tdxsim quote: --out %s: %w", c.out, unwrapPathError(err))
	}
	fmt.Fprintf(e.stdout, "wrote a %d-byte simulated quote to %s (mrtd %s, debug %t)\n", len(quote), c.out, hex.EncodeToString(td.MRTD[:]), td.Debug)
	return nil
}
