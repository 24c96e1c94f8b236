// Command kbsctl is the admin CLI of the Confidential Model Loader.
//
// Usage:
//
//	kbsctl key create llama-3-8b --kbs kbs:8443 --kbs-spiffe-id spiffe://example.org/kbs \
//	    --svid-cert admin.pem --svid-key admin-key.pem --bundle ca.pem
//	kbsctl key import|rotate|list|get|disable|enable|destroy ...
//	kbsctl policy put --key llama-3-8b --file policy.json
//	kbsctl policy get|list|test ...
//	kbsctl model encrypt --kbs kbs:8443 --key-id llama-3-8b --in ./llama-3-8b --out ./llama-3-8b.emdl
//	kbsctl model keygen|encrypt --key-file|decrypt|inspect ...
//	kbsctl audit list [--key ID] [--decision deny] [--since 24h]
//	kbsctl audit verify
//	kbsctl collateral import SRC --dir DST
//	kbsctl dev certs DIR --trust-domain TD --id kbs --id loader --id admin
//	kbsctl dev tdxsim init DIR
//	kbsctl dev tdxsim quote --dir DIR --out FILE [--mrtd HEX]
//	kbsctl help [<group> [<command>]]
//
// The commands that talk to the key broker share the connection flags
// --kbs, --kbs-spiffe-id, --spiffe-socket or --svid-cert/--svid-key/--bundle,
// and --timeout, with the environment variables CML_KBS, CML_KBS_SPIFFE_ID,
// SPIFFE_ENDPOINT_SOCKET, CML_SVID_CERT, CML_SVID_KEY and CML_BUNDLE as
// defaults (conn.go).
//
// Exit codes: 0 success, 1 failure, 2 usage error, 3 refused (a model
// refused, a request denied by the key broker, a policy test that denies, a
// broken audit log), 130 interrupted. docs/kbsctl.md is the user
// documentation.
//
// Layout: main.go only wires signals and os.Args to run (cli.go), which
// dispatches through the command table in commands.go. Each command lives in
// <group>_<name>.go, with its test in <group>_<name>_test.go; a two-word
// command ("dev tdxsim init") in dev_tdxsim_init.go. "policy test" is the
// exception: its files are policy_testcmd.go and policy_testcmd_test.go,
// because policy_test.go would be a test file. Helpers shared by a group
// are in <group>.go (key.go, policy.go, model.go). The online commands'
// tests run a real key broker (server.New) over loopback mTLS with devca
// SVIDs and the TDX simulator (broker_helpers_test.go).
package main
