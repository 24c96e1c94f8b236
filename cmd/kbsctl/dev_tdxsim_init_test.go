package main

import (
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cml-project/cml/tdx/tdxsim"
)

func TestDevTdxsimInit(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "sim")
	r := kbsctl(t, "dev", "tdxsim", "init", dir)
	if r.code != exitOK {
		t.Fatalf("tdxsim init: %v", r)
	}
	if !strings.Contains(r.stderr, "DEVELOPMENT ONLY") {
		t.Errorf("no development-only note: %q", r.stderr)
	}
	def := tdxsim.DefaultTDParams().JSON()
	for _, want := range []string{
		"created a simulated TDX platform in " + dir + " (TCB status UpToDate)",
		"--dev-insecure-simulated-tdx " + dir,
		"  mrtd:  " + def.MRTD + "\n",
		"  rtmr3: " + def.RTMR[3] + "\n",
		"  debug: false\n",
	} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("output lacks %q:\n%s", want, r.stdout)
		}
	}
	for _, f := range []string{tdxsim.ConfigFile, tdxsim.RootFile, tdxsim.ChainFile, tdxsim.KeysDir, tdxsim.CollateralDir} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
	if _, err := tdxsim.Load(dir); err != nil {
		t.Errorf("the directory does not load: %v", err)
	}
}

func TestDevTdxsimInitOptions(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "sim")
	mrtd := strings.Repeat("ab", 48)
	rtmr2 := strings.Repeat("0C", 48)
	r := kbsctl(t, "dev", "tdxsim", "init", dir, "--mrtd", mrtd, "--rtmr2", rtmr2, "--debug", "--tcb-status", "OutOfDate", "--json")
	if r.code != exitOK {
		t.Fatalf("tdxsim init: %v", r)
	}
	var got tdxsimInitJSON
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
		t.Fatalf("--json output: %v\n%s", err, r.stdout)
	}
	if got.TD.MRTD != mrtd || got.TD.RTMR[2] != strings.ToLower(rtmr2) || !got.TD.Debug || got.TCBStatus != "OutOfDate" ||
		got.Root != filepath.Join(dir, tdxsim.RootFile) || got.Dir != dir {
		t.Errorf("--json: %+v", got)
	}
	if got.TD.RTMR[0] != tdxsim.DefaultTDParams().JSON().RTMR[0] {
		t.Errorf("rtmr0 changed without --rtmr0: %s", got.TD.RTMR[0])
	}
	sim, err := tdxsim.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if td := sim.DefaultTD(); hex.EncodeToString(td.MRTD[:]) != mrtd || !td.Debug || sim.TCBStatus() != "OutOfDate" {
		t.Errorf("persisted default TD: mrtd %x debug %t status %s", td.MRTD, td.Debug, sim.TCBStatus())
	}
}

func TestDevTdxsimInitErrors(t *testing.T) {
	used := t.TempDir()
	if err := os.WriteFile(filepath.Join(used, "x"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	fresh := filepath.Join(t.TempDir(), "sim")
	for _, tc := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"dev", "tdxsim", "init", used}, exitFailure, "is not empty; choose a DIR that does not exist or is empty"},
		{[]string{"dev", "tdxsim", "init", fresh, "--tcb-status", "Fine"}, exitUsage, `--tcb-status "Fine": want one of UpToDate`},
		{[]string{"dev", "tdxsim", "init", fresh, "--mrtd", "abc"}, exitUsage, "--mrtd: not hex"},
		{[]string{"dev", "tdxsim", "init", fresh, "--rtmr1", "abcd"}, exitUsage, "--rtmr1: 4 hex digits, want 96"},
		{[]string{"dev", "tdxsim", "init"}, exitUsage, "tdxsim init: missing DIR"},
		{[]string{"dev", "tdxsim"}, exitUsage, "missing tdxsim command (known: init, quote)"},
		{[]string{"dev", "tdxsim", "start"}, exitUsage, `unknown dev tdxsim command "start" (known: init, quote)`},
	} {
		r := kbsctl(t, tc.args...)
		if r.code != tc.code || !strings.Contains(r.stderr, tc.msg) {
			t.Errorf("kbsctl %q: want exit %d and %q: %v", tc.args, tc.code, tc.msg, r)
		}
	}
	if _, err := os.Stat(fresh); err == nil {
		t.Error("a usage error created the directory")
	}
	if r := kbsctl(t, "dev", "tdxsim", "--help"); r.code != exitOK || !strings.Contains(r.stdout, "tdxsim init") {
		t.Errorf("dev tdxsim --help: %v", r)
	}
	if r := kbsctl(t, "help", "dev", "tdxsim", "quote"); r.code != exitOK || !strings.Contains(r.stdout, "kbsctl dev tdxsim quote --dir DIR") {
		t.Errorf("help dev tdxsim quote: %v", r)
	}
}
