package main

import (
	"context"
	"fmt"

	kbsv1 "github.com/cml-project/cml/proto/cml/kbs/v1"
)

func keyEnableCommand() *command {
	return keyStateCommand(keyStateChange{
		verb:    "enable",
		summary: "enable a disabled key, or one disabled version of it",
		about: `Enables the key ID as a whole, or with --version N only that version. Enabling
a key restores its versions' own states as they were. A destroyed key or
version cannot be enabled. Enabling something enabled succeeds and changes
nothing. Needs the admin role.
`,
		call: func(ctx context.Context, admin kbsv1.AdminServiceClient, id string, version uint32) (*kbsv1.KeyMetadata, error) {
			resp, err := admin.EnableKey(ctx, &kbsv1.EnableKeyRequest{KeyId: id, Version: version, WholeKey: version == 0})
			return resp.GetKey(), err
		},
		done: func(id string, version uint32) string {
			if version == 0 {
				return fmt.Sprintf("key %s is enabled: its enabled versions can be released again (subject to its policy)", id)
			}
			return fmt.Sprintf("version %d of key %s is enabled", version, id)
		},
	})
}
