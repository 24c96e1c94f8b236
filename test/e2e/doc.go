// Package e2e tests the three programs of the Confidential Model Loader
// together, as the processes a user runs: kbs, kbsctl and cml-loader, built
// from this tree with `go build` into a temporary directory by TestMain.
//
//	go test ./test/e2e                       # the whole suite (about a minute)
//	go test ./test/e2e -run TestDemoFlow -v  # one scenario
//	go test -short ./test/e2e                # skips everything (no build)
//
// Every test makes its own world in t.TempDir: a development SPIFFE CA and
// SVIDs (kbsctl dev certs: kbs, loader, admin, intruder), a simulated TDX
// platform (kbsctl dev tdxsim init), an initialised data directory (kbs
// init) and a `kbs serve --dev-insecure-simulated-tdx` on free loopback
// ports, read back from its "kbs serving" log line. Processes are stopped
// with SIGTERM (SIGKILL after 10 s) by t.Cleanup, and die with the test
// binary (Pdeathsig). Logs of a failed test are printed.
//
// The scenarios: the demo flow (scripts/demo.sh, step for step, with the
// denials asserted by reason code and the audit log checked), the loader
// started before the broker, the loader killed with SIGKILL mid-decryption
// (both --dst forms: no partial plaintext at --dst, a rerun succeeds), a
// tampered model (exit 5, nothing written), a model under key version 1
// after rotation to 2 (and version 1 destroyed), a destroyed key (exit 3,
// key_destroyed), and scripts/demo.sh itself run against the same binaries.
package e2e
