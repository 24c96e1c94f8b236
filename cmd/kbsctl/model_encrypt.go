package main

import (
	"context"
	"flag"
	"fmt"
	"math"
	"os"

	"github.com/cml-project/cml/emdl"
)

type modelEncrypt struct {
	keyFile    string
	keyID      string
	keyVersion uint
	in, out    string
	chunkSize  sizeFlag
	workers    int
	quiet      bool
}

func modelEncryptCommand() *command {
	return &command{
		name:     "encrypt",
		synopsis: "--key-file FILE --key-id ID --in PATH --out DIR [flags]",
		summary:  "encrypt a model file or directory into an EMDL model directory",
		help: `
Encrypts the model at --in (a single file, or a directory of files) into the
directory --out, which must not exist yet or be empty. Every file is
encrypted in chunks with AES-256-GCM under a per-file key derived from the
256-bit key in --key-file; a directory model also gets an authenticated
manifest. The key id and version are recorded in the model so that the
loader knows which key to ask the key broker for.

On a terminal a progress line is shown on stderr (--quiet turns it off); a
one-line summary is printed on stdout.

Examples:
  kbsctl model keygen llama.key
  kbsctl model encrypt --key-file llama.key --key-id llama-3-8b \
      --in ./llama-3-8b --out ./llama-3-8b.emdl
  kbsctl model encrypt --key-file llama.key --key-id llama-3-8b --key-version 2 \
      --chunk-size 4MiB --in model.gguf --out model.emdl
`,
		setup: func(fs *flag.FlagSet) action {
			c := &modelEncrypt{}
			fs.StringVar(&c.keyFile, "key-file", "", "`FILE` holding the 256-bit key as 64 hex digits, from 'kbsctl model keygen' (required)")
			fs.StringVar(&c.keyID, "key-id", "", "key `ID` to record in the model, e.g. llama-3-8b (required)")
			fs.UintVar(&c.keyVersion, "key-version", 1, "key version `N` to record in the model")
			fs.StringVar(&c.in, "in", "", "model `PATH` to encrypt: a file or a directory (required)")
			fs.StringVar(&c.out, "out", "", "output `DIR`; must not exist or be empty (required)")
			fs.Var(&c.chunkSize, "chunk-size", "plaintext chunk `SIZE`, e.g. 1MiB or 256KiB (default 1MiB)")
			fs.IntVar(&c.workers, "workers", 0, "parallel workers `N` (default: number of CPUs)")
			fs.BoolVar(&c.quiet, "quiet", false, "no progress line on stderr")
			// A later release adds --kbs ADDR: encrypt under a key held by
			// the key broker instead of --key-file (see loadKey).
			return c.run
		},
	}
}

func (c *modelEncrypt) run(ctx context.Context, e *env, _ []string) error {
	switch {
	case c.keyFile == "":
		return usagef("encrypt: --key-file is required (create a key with 'kbsctl model keygen FILE')")
	case c.keyID == "":
		return usagef("encrypt: --key-id is required: the name under which the key broker holds the key, e.g. llama-3-8b")
	case c.in == "":
		return usagef("encrypt: --in is required: the model file or directory to encrypt")
	case c.out == "":
		return usagef("encrypt: --out is required: a directory that does not exist yet")
	case c.workers < 0:
		return usagef("encrypt: --workers %d: want 0 (one per CPU) or more", c.workers)
	case c.chunkSize.n > math.MaxInt32:
		return usagef("encrypt: --chunk-size %s is too large", c.chunkSize.String())
	}
	version, err := keyVersionFlag(c.keyVersion, false)
	if err != nil {
		return err
	}
	key, err := c.loadKey(ctx, e)
	if err != nil {
		return err
	}
	defer clear(key)

	// An empty --out directory is allowed. emdl.Encrypt documents that too,
	// but its final os.Rename cannot replace a directory (Go refuses, even an
	// empty one), so the empty directory is removed here and put back if the
	// encryption fails.
	var restore func()
	if fi, err := os.Lstat(c.out); err == nil && fi.IsDir() && isEmptyDir(c.out) {
		if err := os.Remove(c.out); err != nil {
			return fmt.Errorf("encrypt: --out %s: %w", c.out, unwrapPathError(err))
		}
		restore = func() { os.Mkdir(c.out, fi.Mode().Perm()) }
	}

	bar := e.newBar(c.quiet, "encrypt", plaintextSize(c.in))
	start := e.now()
	sum, err := emdl.Encrypt(ctx, key, c.in, c.out, emdl.EncryptOptions{
		KeyID:      c.keyID,
		KeyVersion: version,
		ChunkSize:  int(c.chunkSize.n),
		Workers:    c.workers,
		Progress:   progressFunc(bar),
	})
	finishBar(bar, err)
	if err != nil && restore != nil {
		restore()
	}
	if ierr := interrupted(ctx, err, c.out); ierr != nil {
		return ierr
	}
	if err != nil {
		return explainModelError("encrypt", c.in, err)
	}
	printSummary(e, "encrypted", sum, e.now().Sub(start), c.in, c.out)
	return nil
}

// loadKey returns the key to encrypt under. It is the hook for a later
// "--kbs ADDR" mode, which gets the key from the broker instead of a file.
func (c *modelEncrypt) loadKey(_ context.Context, e *env) ([]byte, error) {
	return readKeyFile("--key-file", c.keyFile, e.stderr)
}
