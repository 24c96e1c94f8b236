// Command whoami is a workload for the SPIRE tests: it gets its X.509-SVID
// from the Workload API with package identity, as kbs and cml-loader do,
// and prints it as one JSON line:
//
//	whoami -socket unix:///tmp/spire-1/agent.sock -timeout 5s
//	{"spiffe_id":"spiffe://cml.test/whoami","serial":"...","not_before":"...","not_after":"..."}
//
// Exit codes: 0 printed, 1 no SVID (no registration entry, no agent, or the
// timeout passed), 2 bad usage.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/cml-project/cml/identity"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

type result struct {
	SPIFFEID  string    `json:"spiffe_id"`
	Serial    string    `json:"serial"`
	NotBefore time.Time `json:"not_before"`
	NotAfter  time.Time `json:"not_after"`
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("whoami", flag.ContinueOnError)
	fs.SetOutput(stderr)
	socket := fs.String("socket", "", "Workload API address, unix:///path (required)")
	timeout := fs.Duration("timeout", 10*time.Second, "how long to wait for the SVID")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *socket == "" || fs.NArg() != 0 || *timeout <= 0 {
		fmt.Fprintln(stderr, "whoami: usage: whoami -socket unix:///path [-timeout 10s]")
		return 2
	}
	src, err := identity.Open(context.Background(), identity.Config{Socket: *socket, StartupTimeout: *timeout})
	if err != nil {
		fmt.Fprintf(stderr, "whoami: %v\n", err)
		return 1
	}
	defer src.Close()
	svid, err := src.GetX509SVID()
	if err != nil {
		fmt.Fprintf(stderr, "whoami: %v\n", err)
		return 1
	}
	leaf := svid.Certificates[0]
	if err := json.NewEncoder(stdout).Encode(result{
		SPIFFEID:  svid.ID.String(),
		Serial:    leaf.SerialNumber.Text(16),
		NotBefore: leaf.NotBefore.UTC(),
		NotAfter:  leaf.NotAfter.UTC(),
	}); err != nil {
		fmt.Fprintf(stderr, "whoami: %v\n", err)
		return 1
	}
	return 0
}
