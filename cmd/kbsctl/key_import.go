package main

import (
	"context"
	"flag"
	"fmt"

	kbsv1 "github.com/cml-project/cml/proto/cml/kbs/v1"
)

type keyImport struct {
	conn        connFlags
	keyFile     string
	newVersion  bool
	description string
	labels      listFlag
	json        bool
}

func keyImportCommand() *command {
	return &command{
		name:     "import",
		synopsis: "ID --key-file FILE [--new-version] [--description TEXT] [--label KEY=VALUE]... [--json] [connection flags]",
		args:     []string{"ID"},
		summary:  "store an existing key file in the key broker (as a new key or a new version)",
		help: `
Imports the 256-bit key in --key-file (64 hex digits, as written by
'kbsctl model keygen') into the key broker: as version 1 of the new key ID,
or with --new-version as a new primary version of the existing key ID. The
key bytes travel only inside the mTLS connection and are stored encrypted
under the broker's key-encryption key. Needs the admin role.

WARNING: a key generated offline exists outside the broker. Every copy of
the key file (and every backup of the disk it was on) can decrypt the models
without any attestation, and no audit record will show it. Import only keys
models were already encrypted with; then destroy the file (shred -u FILE).
For new models prefer 'kbsctl key create' and 'kbsctl model encrypt --kbs',
which never put the key on disk.
` + connHelp + `

Examples:
  kbsctl key import llama-3-8b --key-file llama.key --description "imported from the 2024 release"
  kbsctl key import llama-3-8b --key-file llama-v2.key --new-version
`,
		setup: func(fs *flag.FlagSet) action {
			c := &keyImport{}
			c.conn.register(fs)
			fs.StringVar(&c.keyFile, "key-file", "", "`FILE` holding the 256-bit key as 64 hex digits (required)")
			fs.BoolVar(&c.newVersion, "new-version", false, "add the key as a new primary version of the existing key ID")
			fs.StringVar(&c.description, "description", "", "free `TEXT` for humans (new key only)")
			fs.Var(&c.labels, "label", "label `KEY=VALUE` (new key only); repeat for several")
			fs.BoolVar(&c.json, "json", false, "print the key's metadata as JSON")
			return c.run
		},
	}
}

func (c *keyImport) run(ctx context.Context, e *env, args []string) error {
	id := args[0]
	if err := validKeyID("key import: ID", id); err != nil {
		return err
	}
	if c.keyFile == "" {
		return usagef("import: --key-file is required: the file holding the key as 64 hex digits")
	}
	labels, err := parseLabels(c.labels)
	if err != nil {
		return err
	}
	if c.newVersion && (c.description != "" || len(labels) > 0) {
		return usagef("import: --description and --label describe a new key; they cannot be given with --new-version")
	}
	// Check the connection flags before reading the key, so that a usage
	// error never needs the key in memory.
	if _, _, err := c.conn.options(e); err != nil {
		return err
	}
	key, err := readKeyFile("--key-file", c.keyFile, e.stderr)
	if err != nil {
		return err
	}
	defer clear(key)
	hint := func(reason string) string {
		switch reason {
		case "key_exists":
			return "to add the key as a new version of it, pass --new-version"
		case "key_not_found":
			return "without --new-version the key is created"
		}
		return keyHint(reason)
	}
	resp, err := adminCall(ctx, e, &c.conn, "key import "+id, hint,
		func(ctx context.Context, a kbsv1.AdminServiceClient) (*kbsv1.ImportKeyResponse, error) {
			return a.ImportKey(ctx, &kbsv1.ImportKeyRequest{
				KeyId:       id,
				Algorithm:   kbsv1.KeyAlgorithm_KEY_ALGORITHM_AES_256_GCM,
				KeyMaterial: key,
				Description: c.description,
				Labels:      labels,
				NewVersion:  c.newVersion,
			})
		})
	if err != nil {
		return err
	}
	if c.json {
		return printJSON(e.stdout, resp.GetKey())
	}
	fmt.Fprintf(e.stdout, "imported %s into key %s as version %d (primary)\n", c.keyFile, sanitize(id), resp.GetVersion())
	if resp.GetKey().GetPolicyVersion() == 0 {
		fmt.Fprintf(e.stdout, "it has no release policy yet: every release is denied until 'kbsctl policy put --key %s --file policy.json'\n", sanitize(id))
	}
	fmt.Fprintf(e.stderr, "kbsctl: warning: %s still holds the key outside the broker; once no longer needed, destroy it (shred -u %s)\n", c.keyFile, c.keyFile)
	return nil
}
