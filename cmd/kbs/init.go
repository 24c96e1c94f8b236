package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/cml-project/cml/server/kek"
	"github.com/cml-project/cml/server/store"
)

func initCommand() *command {
	var (
		dataDir, kekFile string
		existOK          bool
	)
	return &command{
		name:     "init",
		synopsis: "--data-dir DIR [--kek-file FILE] [--exist-ok]",
		summary:  "create a data directory: the KEK file and an empty keystore",
		help: `Creates DIR (mode 0700) holding a new key-encryption key (KEK) file,
` + store.KEKFileName + ` (mode 0600), and an empty keystore database, ` + store.DBFileName + ` (mode
0600), sealed under that KEK. Refuses (exit 3) if either file exists.

The KEK file is not written when the KEK comes from elsewhere: from
--kek-file (for example a mounted Kubernetes Secret) or from the CML_KEK
environment variable. Back up the KEK and the database separately: the
database without the KEK is useless, and the KEK beside the database
protects nothing.

With --exist-ok an already initialised directory is not an error: the
database is opened and checked under the KEK, and kbs exits 0. This suits a
Kubernetes init container that runs before every start of kbs serve.

Examples:
  kbs init --data-dir /var/lib/kbs
  CML_KEK=$(cat kek.hex) kbs init --data-dir /var/lib/kbs
  kbs init --data-dir /var/lib/kbs --kek-file /etc/kbs/kek/kek --exist-ok`,
		setup: func(fl *flags) action {
			fl.String(&dataDir, "data-dir", "DIR", "", "data directory to create (required)")
			fl.String(&kekFile, "kek-file", "FILE", "", "use this existing KEK file instead of creating DIR/"+store.KEKFileName+"\n(it must not be readable by group or others)")
			fl.Bool(&existOK, "exist-ok", false, "succeed without changes if DIR is already initialised\n(after checking that its database opens under the KEK)")
			fl.Env(kek.EnvVar, "the KEK as 64 hex digits, instead of a KEK file;\nconflicts with --kek-file")
			return func(ctx context.Context, e *env) error {
				return runInit(ctx, e, dataDir, kekFile, existOK)
			}
		},
	}
}

func runInit(ctx context.Context, e *env, dataDir, kekFile string, existOK bool) error {
	if dataDir == "" {
		return usagef("--data-dir is required")
	}
	provider, kekDesc, err := loadKEK(dataDir, kekFile, e.lookupEnv, false)
	if err != nil {
		return err
	}
	dbPath := store.DBPath(dataDir)
	if existOK {
		if _, err := os.Lstat(dbPath); err == nil {
			return checkExisting(ctx, e, dataDir, provider, kekDesc)
		}
	}

	opts := store.Options{Now: e.now}
	if provider != nil {
		opts.KEK = provider
	}
	if err := store.Init(ctx, dataDir, opts); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return &codedError{code: exitExists, err: fmt.Errorf("init: %w (use --exist-ok to accept an initialised directory)", err)}
		}
		return fmt.Errorf("init: %w", err)
	}

	abs, _ := filepath.Abs(dataDir)
	fmt.Fprintf(e.stdout, "Initialised the key broker's data directory %s:\n", abs)
	fmt.Fprintf(e.stdout, "  %-*s  directory (mode 0700)\n", len(dbPath), dataDir+string(filepath.Separator))
	if provider == nil {
		fmt.Fprintf(e.stdout, "  %-*s  key-encryption key (mode 0600); back it up, apart from the database\n", len(dbPath), store.KEKPath(dataDir))
	} else {
		fmt.Fprintf(e.stdout, "  (no KEK file: the database is sealed under the KEK from %s)\n", kekDesc)
	}
	fmt.Fprintf(e.stdout, "  %-*s  keystore database (mode 0600)\n", len(dbPath), dbPath)
	if fi, err := os.Stat(dataDir); err == nil && fi.Mode().Perm()&0o077 != 0 {
		fmt.Fprintf(e.stdout, "Warning: %s existed with mode %04o; consider 'chmod 700 %s'.\n", dataDir, fi.Mode().Perm(), dataDir)
	}
	kekHint := ""
	if kekFile != "" {
		kekHint = " --kek-file " + kekFile
	}
	fmt.Fprintf(e.stdout, `
Next, start the broker with its SPIFFE identity and its administrators, e.g.:
  kbs serve --data-dir %s%s \
      --spiffe-socket unix:///run/spire/agent-sockets/spire-agent.sock \
      --admin-ids spiffe://example.org/ns/cml-system/sa/kbs-admin
Run 'kbs serve --help' for every option.
`, dataDir, kekHint)
	return nil
}

// checkExisting opens an initialised data directory's database under the
// KEK, which runs the store's integrity check, and closes it.
func checkExisting(ctx context.Context, e *env, dataDir string, provider kek.Provider, kekDesc string) error {
	if provider == nil {
		p, err := kek.LoadFile(store.KEKPath(dataDir))
		if err != nil {
			return fmt.Errorf("init: %s is initialised but its KEK cannot be loaded: %w", dataDir, err)
		}
		provider, kekDesc = p, store.KEKPath(dataDir)
	}
	st, err := store.Open(ctx, store.DBPath(dataDir), store.Options{KEK: provider, Now: e.now})
	if err != nil {
		return fmt.Errorf("init: %s is initialised but does not open: %w", dataDir, err)
	}
	if err := st.Close(); err != nil {
		return fmt.Errorf("init: close %s: %w", store.DBPath(dataDir), err)
	}
	fmt.Fprintf(e.stdout, "%s is already initialised; its database opens under the KEK from %s. Nothing changed.\n", dataDir, kekDesc)
	return nil
}

// loadKEK returns the KEK a command was given: from kekFile, from the
// CML_KEK environment variable, or — when neither is set — from the data
// directory's KEK file if useDefault, else nil (init creates one). Setting
// both is a usage error. The description names the source, never the key.
func loadKEK(dataDir, kekFile string, lookupEnv func(string) (string, bool), useDefault bool) (kek.Provider, string, error) {
	_, envSet := lookupEnv(kek.EnvVar)
	switch {
	case kekFile != "" && envSet:
		return nil, "", usagef("both --kek-file and %s are set; give the KEK one way only", kek.EnvVar)
	case envSet:
		p, err := kek.LoadEnv(lookupEnv)
		if err != nil {
			return nil, "", err
		}
		return p, "environment variable " + kek.EnvVar, nil
	case kekFile == "" && !useDefault:
		return nil, "", nil
	case kekFile == "":
		kekFile = store.KEKPath(dataDir)
	}
	p, err := kek.LoadFile(kekFile)
	if err != nil {
		return nil, "", err
	}
	return p, kekFile, nil
}
