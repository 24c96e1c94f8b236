package main

// commandGroups is the command tree. To add a command: write
// <group>_<name>.go with a constructor returning *command (see
// model_inspect.go for a small one), add it to its group below, and test it
// through run() in <group>_<name>_test.go.
func commandGroups() []*group {
	return []*group{
		{
			name:    "model",
			summary: "generate model keys; encrypt, decrypt and inspect models",
			commands: []*command{
				modelKeygenCommand(),
				modelEncryptCommand(),
				modelDecryptCommand(),
				modelInspectCommand(),
			},
		},
		// Later: key, policy, audit, dev, collateral.
	}
}
