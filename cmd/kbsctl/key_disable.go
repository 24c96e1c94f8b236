package main

import (
	"context"
	"fmt"

	kbsv1 "github.com/cml-project/cml/proto/cml/kbs/v1"
)

func keyDisableCommand() *command {
	return keyStateCommand(keyStateChange{
		verb:    "disable",
		summary: "stop releasing a key, or one version of it (reversible)",
		about: `Disables the key ID as a whole, or with --version N only that version.
Nothing disabled is released or exported, but it is kept: 'kbsctl key
enable' undoes it. Disabling a key leaves its versions' own states as they
were. Disabling something disabled succeeds and changes nothing. Needs the
admin role.
`,
		call: func(ctx context.Context, admin kbsv1.AdminServiceClient, id string, version uint32) (*kbsv1.KeyMetadata, error) {
			resp, err := admin.DisableKey(ctx, &kbsv1.DisableKeyRequest{KeyId: id, Version: version, WholeKey: version == 0})
			return resp.GetKey(), err
		},
		done: func(id string, version uint32) string {
			if version == 0 {
				return fmt.Sprintf("key %s is disabled: none of its versions is released or exported until 'kbsctl key enable %s'", id, id)
			}
			return fmt.Sprintf("version %d of key %s is disabled: it is not released or exported until 'kbsctl key enable %s --version %d'", version, id, id, version)
		},
	})
}
