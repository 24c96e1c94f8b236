// Command kbsctl is the admin CLI of the Confidential Model Loader.
//
// Usage:
//
//	kbsctl model keygen model.key
//	kbsctl model encrypt --key-file model.key --key-id llama-3-8b --in ./llama-3-8b --out ./llama-3-8b.emdl
//	kbsctl model inspect ./llama-3-8b.emdl [--json]
//	kbsctl model decrypt --key-file model.key --in ./llama-3-8b.emdl --out /dev/shm/llama-3-8b
//	kbsctl help [<group> [<command>]]
//
// Exit codes: 0 success, 1 failure, 2 usage error, 3 model refused (wrong
// key, tampered, truncated, …), 130 interrupted. docs/kbsctl.md is the user
// documentation.
//
// Layout: main.go only wires signals and os.Args to run (cli.go), which
// dispatches through the command table in commands.go. Each command lives in
// <group>_<name>.go, with its test in <group>_<name>_test.go.
package main
