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
	verifyHash bool
	skipHash   bool // the default since the hash re-check became opt-in; kept so that old scripts still run
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

What is checked in every mode (nothing appears at --out unless all of it
passes):
  - the manifest: its key commitment (a wrong key is told apart from
    tampering), its header MAC, and its body's AES-256-GCM tag;
  - the model directory: exactly the files the manifest lists, no symlink or
    special file, nothing extra, nothing missing, no path outside --out;
  - each file's header: byte for byte the one the manifest lists (which
    refuses a file from another model or another encryption of this one),
    its key commitment and MAC, and the file's exact size;
  - every chunk: its AES-256-GCM tag under a key bound to the file's path,
    with the chunk's index and a last-chunk flag in the nonce and the
    header's digest as associated data, so a modified, reordered, dropped,
    duplicated, truncated, extended or spliced chunk is refused.
Together these mean that anyone without the key cannot change one byte of
the plaintext unnoticed.

Not checked by default: that each file's plaintext SHA-256 equals the one
the manifest records. The manifest and every chunk are authenticated under
the same key, so a mismatch can only come from an encryptor that holds the
key and recorded a wrong hash (a bug, or another tool); cml-loader skips it
too. --verify-plaintext-hash adds that re-check; it costs about 0.8
CPU-seconds per GiB, which cannot be spread over cores within one file.
(--skip-plaintext-hash, the former opt-out, is still accepted: it is now the
default.)

Examples:
  kbsctl model decrypt --key-file llama.key --in ./llama-3-8b.emdl --out /dev/shm/llama-3-8b
  kbsctl model decrypt --key-file llama.key --key-id llama-3-8b --key-version 2 \
      --in model.emdl --out model.gguf
  kbsctl model decrypt --key-file llama.key --verify-plaintext-hash --in ./llama-3-8b.emdl --out ./llama-3-8b
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
			fs.BoolVar(&c.verifyHash, "verify-plaintext-hash", false, "also re-check each file's plaintext SHA-256 against the manifest (slower; every chunk is authenticated either way)")
			fs.BoolVar(&c.skipHash, "skip-plaintext-hash", false, "the default; accepted for compatibility (conflicts with --verify-plaintext-hash)")
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
	case c.verifyHash && c.skipHash:
		return usagef("decrypt: --verify-plaintext-hash and --skip-plaintext-hash contradict each other; skipping is the default")
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

		SkipPlaintextHash: !c.verifyHash,
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
