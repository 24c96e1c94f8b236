package main

// commandGroups is the command tree. To add a command: write
// <group>_<name>.go with a constructor returning *command (see
// model_inspect.go for a small one), add it to its group below, and test it
// through run() in <group>_<name>_test.go. A two-word name ("tdxsim init")
// lives in <group>_<word1>_<word2>.go.
func commandGroups() []*group {
	return []*group{
		{
			name:    "key",
			summary: "create, import, rotate, list, disable, enable and destroy keys in the key broker",
			commands: []*command{
				keyCreateCommand(),
				keyImportCommand(),
				keyRotateCommand(),
				keyListCommand(),
				keyGetCommand(),
				keyDisableCommand(),
				keyEnableCommand(),
				keyDestroyCommand(),
			},
		},
		{
			name:    "policy",
			summary: "write, read and dry-run key release policies",
			commands: []*command{
				policyPutCommand(),
				policyGetCommand(),
				policyListCommand(),
				policyTestCommand(),
			},
		},
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
		{
			name:    "audit",
			summary: "list the key broker's audit records and verify their hash chain",
			commands: []*command{
				auditListCommand(),
				auditVerifyCommand(),
			},
		},
		{
			name:    "collateral",
			summary: "install TDX collateral for a key broker without network access",
			commands: []*command{
				collateralImportCommand(),
			},
		},
		{
			name:    "dev",
			summary: "DEVELOPMENT ONLY: SPIFFE certificates and a simulated TDX platform",
			commands: []*command{
				devCertsCommand(),
				devTdxsimInitCommand(),
				devTdxsimQuoteCommand(),
			},
		},
	}
}
