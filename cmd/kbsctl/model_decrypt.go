package main

import (
	"context"
	"flag"

	"github.com/cml-project/cml/emdl"
)

type modelDecrypt struct {
	keyFile    string
	keyID      string
	keyVersion uint
	in, out    string
	workers    int
	quiet      bool
	skipHash   bool
}

func modelDecryptCommand() *command {
	return &command{
		name:     "decrypt",
		synopsis: "--key-file FILE --in DIR --out PATH [flags]",
		summary:  "verify and decrypt an EMDL model directory",
		help: `
Decrypts the EMDL model directory --in to --out, which must not exist: a file
for a single-file model, a directory for a directory model. Every chunk of
every file is authenticated; a wrong key, a modified, truncated or extended
file, a file missing from or not listed in the manifest, or an unsafe path
refuses the whole model (exit code 3) and leaves nothing at --out. Output is
written under a temporary name and renamed into place only once verified,
and an interrupted decrypt (Ctrl-C) removes it.

--key-id and --key-version, when given, must match what the model records;
use them to make sure you decrypt the model you meant to.

Each file's plaintext SHA-256 is also re-checked against the manifest.
--skip-plaintext-hash skips that re-check, as cml-loader does by default:
every chunk is still authenticated (AES-256-GCM, in order and complete,
under a key-committed header that the authenticated manifest lists), so
anyone without the key still cannot change the model unnoticed; the hash
only re-checks that the encryptor was consistent, and costs about 0.8
CPU-seconds per GiB that cannot be spread over cores within a file.

Examples:
  kbsctl model decrypt --key-file llama.key --in ./llama-3-8b.emdl --out /dev/shm/llama-3-8b
  kbsctl model decrypt --key-file llama.key --key-id llama-3-8b --key-version 2 \
      --in model.emdl --out model.gguf
  kbsctl model decrypt --key-file llama.key --skip-plaintext-hash --in ./llama-3-8b.emdl --out /dev/shm/llama-3-8b
`,
		setup: func(fs *flag.FlagSet) action {
			c := &modelDecrypt{}
			fs.StringVar(&c.keyFile, "key-file", "", "`FILE` holding the 256-bit key as 64 hex digits (required)")
			fs.StringVar(&c.in, "in", "", "EMDL model `DIR` to decrypt (required)")
			fs.StringVar(&c.out, "out", "", "output `PATH`; must not exist (required)")
			fs.StringVar(&c.keyID, "key-id", "", "refuse the model unless it records key `ID`")
			fs.UintVar(&c.keyVersion, "key-version", 0, "refuse the model unless it records key version `N`")
			fs.IntVar(&c.workers, "workers", 0, "parallel workers `N` (default: number of CPUs)")
			fs.BoolVar(&c.quiet, "quiet", false, "no progress line on stderr")
			fs.BoolVar(&c.skipHash, "skip-plaintext-hash", false, "skip re-checking each file's plaintext SHA-256 (every chunk is still authenticated)")
			return c.run
		},
	}
}

func (c *modelDecrypt) run(ctx context.Context, e *env, _ []string) error {
	switch {
	case c.keyFile == "":
		return usagef("decrypt: --key-file is required: the key the model was encrypted with")
	case c.in == "":
		return usagef("decrypt: --in is required: the EMDL model directory")
	case c.out == "":
		return usagef("decrypt: --out is required: where to write the plaintext model")
	case c.workers < 0:
		return usagef("decrypt: --workers %d: want 0 (one per CPU) or more", c.workers)
	}
	version, err := keyVersionFlag(c.keyVersion, true)
	if err != nil {
		return err
	}
	if err := checkModelDir("decrypt", c.in); err != nil {
		return err
	}
	info, err := emdl.Inspect(c.in)
	if err != nil {
		return explainModelError("decrypt", c.in, err)
	}
	key, err := readKeyFile("--key-file", c.keyFile, e.stderr)
	if err != nil {
		return err
	}
	defer clear(key)

	bar := e.newBar(c.quiet, "decrypt", info.TotalSize)
	start := e.now()
	sum, err := emdl.Decrypt(ctx, key, c.in, c.out, emdl.DecryptOptions{
		KeyID:      c.keyID,
		KeyVersion: version,
		Workers:    c.workers,
		Progress:   progressFunc(bar),

		SkipPlaintextHash: c.skipHash,
	})
	finishBar(bar, err)
	if ierr := interrupted(ctx, err, c.out); ierr != nil {
		return ierr
	}
	if err != nil {
		return explainModelError("decrypt", c.in, err)
	}
	printSummary(e, "decrypted", sum, e.now().Sub(start), c.in, c.out)
	return nil
}
