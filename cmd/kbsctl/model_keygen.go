package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"

	"github.com/cml-project/cml/emdl"
)

func modelKeygenCommand() *command {
	return &command{
		name:     "keygen",
		synopsis: "FILE",
		args:     []string{"FILE"},
		summary:  "write a new random 256-bit model key to FILE (mode 0600)",
		help: `
Generates a new random 256-bit key and writes it to FILE as 64 lowercase hex
digits and a newline, with file mode 0600. FILE must not exist: keygen never
overwrites a key.

Keep the key file secret. With a key broker (kbs), import it there and
delete the local copy; for local use pass it to 'kbsctl model encrypt' and
'kbsctl model decrypt' with --key-file.

Examples:
  kbsctl model keygen llama-3-8b.key
`,
		setup: func(*flag.FlagSet) action { return runModelKeygen },
	}
}

func runModelKeygen(_ context.Context, e *env, args []string) error {
	path := args[0]
	key := make([]byte, emdl.KeySize)
	defer clear(key)
	if _, err := rand.Read(key); err != nil {
		return fmt.Errorf("generating a key: %w", err)
	}
	text := make([]byte, hex.EncodedLen(len(key))+1)
	defer clear(text)
	hex.Encode(text, key)
	text[len(text)-1] = '\n'

	// O_EXCL: never replace an existing key (losing a key loses every model
	// encrypted under it), and never follow a symlink planted at path.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("%s already exists; keygen never overwrites a key file — choose another name or remove the old key if it is no longer needed", path)
	}
	if err != nil {
		return fmt.Errorf("creating key file %s: %w", path, unwrapPathError(err))
	}
	_, err = f.Write(text)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return fmt.Errorf("writing key file %s: %w", path, unwrapPathError(err))
	}
	fmt.Fprintf(e.stdout, "wrote a new 256-bit key to %s (mode 0600); keep it secret\n", path)
	return nil
}
