package main

import (
	"context"
	"flag"
	"fmt"
	"math"
	"os"

	"google.golang.org/grpc/codes"

	"github.com/cml-project/cml/client"
	"github.com/cml-project/cml/emdl"
	kbsv1 "github.com/cml-project/cml/proto/cml/kbs/v1"
)

type modelEncrypt struct {
	fs         *flag.FlagSet // to tell a given --key-version from the default
	conn       connFlags
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
		synopsis: "(--key-file FILE | --kbs ADDR) --key-id ID --in PATH --out DIR [flags]",
		summary:  "encrypt a model file or directory into an EMDL model directory",
		help: `
Encrypts the model at --in (a single file, or a directory of files) into the
directory --out, which must not exist yet or be empty. Every file is
encrypted in chunks with AES-256-GCM under a per-file key derived from a
256-bit key; a directory model also gets an authenticated manifest. The key
id and version are recorded in the model so that the loader knows which key
to ask the key broker for.

The key comes from exactly one of:

  --kbs ADDR       the key broker (recommended). If the key --key-id does not
                   exist it is created there; otherwise its primary version
                   is used (or --key-version N). kbsctl gets the key with
                   ExportKey, HPKE-sealed to a fresh key pair of its own
                   (admin role; audited), keeps it only in memory and
                   erases it when done: it never touches the disk.
  --key-file FILE  a key file from 'kbsctl model keygen' (offline use);
                   --key-version (default 1) is recorded as given.

On a terminal a progress line is shown on stderr (--quiet turns it off); a
one-line summary is printed on stdout.

Connection flags (with --kbs): --kbs-spiffe-id, and --spiffe-socket or
--svid-cert/--svid-key/--bundle, as for 'kbsctl key create'.

Examples:
  kbsctl model encrypt --kbs kbs.example:8443 --kbs-spiffe-id spiffe://example.org/kbs \
      --svid-cert certs/admin.pem --svid-key certs/admin-key.pem --bundle certs/ca.pem \
      --key-id llama-3-8b --in ./llama-3-8b --out ./llama-3-8b.emdl
  kbsctl model keygen llama.key
  kbsctl model encrypt --key-file llama.key --key-id llama-3-8b \
      --in ./llama-3-8b --out ./llama-3-8b.emdl
  kbsctl model encrypt --key-file llama.key --key-id llama-3-8b --key-version 2 \
      --chunk-size 4MiB --in model.gguf --out model.emdl
`,
		setup: func(fs *flag.FlagSet) action {
			c := &modelEncrypt{fs: fs}
			c.conn.register(fs)
			fs.StringVar(&c.keyFile, "key-file", "", "`FILE` holding the 256-bit key as 64 hex digits, from 'kbsctl model keygen' (or --kbs)")
			fs.StringVar(&c.keyID, "key-id", "", "key `ID` to record in the model, e.g. llama-3-8b (required)")
			fs.UintVar(&c.keyVersion, "key-version", 1, "key version `N` recorded in the model with --key-file; with --kbs the version to export (if not given: the primary)")
			fs.StringVar(&c.in, "in", "", "model `PATH` to encrypt: a file or a directory (required)")
			fs.StringVar(&c.out, "out", "", "output `DIR`; must not exist or be empty (required)")
			fs.Var(&c.chunkSize, "chunk-size", "plaintext chunk `SIZE`, e.g. 1MiB or 256KiB (default 1MiB)")
			fs.IntVar(&c.workers, "workers", 0, "parallel workers `N` (default: number of CPUs)")
			fs.BoolVar(&c.quiet, "quiet", false, "no progress line on stderr")
			return c.run
		},
	}
}

func (c *modelEncrypt) run(ctx context.Context, e *env, _ []string) error {
	switch {
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
	useKBS, err := c.keySource(e)
	if err != nil {
		return err
	}
	var key []byte
	if useKBS {
		if err := validKeyID("encrypt: --key-id", c.keyID); err != nil {
			return err
		}
		var rk *client.ReleasedKey
		rk, err = c.exportKey(ctx, e, version)
		if err != nil {
			return err
		}
		defer rk.Zero()
		key, version = rk.Key, rk.Version
	} else {
		key, err = readKeyFile("--key-file", c.keyFile, e.stderr)
		if err != nil {
			return err
		}
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

// keySource decides where the key comes from: the broker (true) or
// --key-file. Exactly one of --kbs and --key-file is required; CML_KBS
// stands for --kbs only when --key-file is not given.
func (c *modelEncrypt) keySource(e *env) (bool, error) {
	connSet := ""
	c.fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "kbs", "kbs-spiffe-id", "spiffe-socket", "svid-cert", "svid-key", "bundle", "timeout":
			if connSet == "" {
				connSet = f.Name
			}
		}
	})
	switch {
	case c.keyFile != "" && c.conn.addr != "":
		return false, usagef("encrypt: --key-file and --kbs are two key sources; give one")
	case c.keyFile != "" && connSet != "":
		return false, usagef("encrypt: --%s is a key broker flag; it needs --kbs instead of --key-file", connSet)
	case c.keyFile != "":
		return false, nil
	case pick(e, c.conn.addr, envKBS) == "":
		return false, usagef("encrypt: give --kbs ADDR (the key broker holds the key) or --key-file FILE (a key from 'kbsctl model keygen FILE')")
	}
	return true, nil
}

// exportKey gets the key --key-id from the broker, creating it first if it
// does not exist: the primary version, or version if --key-version was
// given. The caller zeroes the returned key.
func (c *modelEncrypt) exportKey(ctx context.Context, e *env, version uint32) (*client.ReleasedKey, error) {
	explicit := false
	c.fs.Visit(func(f *flag.Flag) { explicit = explicit || f.Name == "key-version" })
	kc, err := c.conn.dial(ctx, e)
	if err != nil {
		return nil, err
	}
	defer kc.Close()

	op := "encrypt: key " + c.keyID
	cctx, cancel := kc.call(ctx)
	got, err := kc.Admin().GetKey(cctx, &kbsv1.GetKeyRequest{KeyId: c.keyID})
	cancel()
	if st, ok := innerStatus(err); err != nil && ok && st.Code() == codes.NotFound {
		if explicit && version != 1 {
			return nil, fmt.Errorf("%s: no such key in the key broker, so there is no version %d; omit --key-version to create the key", op, version)
		}
		cctx, cancel := kc.call(ctx)
		created, err := kc.Admin().CreateKey(cctx, &kbsv1.CreateKeyRequest{KeyId: c.keyID, Algorithm: kbsv1.KeyAlgorithm_KEY_ALGORITHM_AES_256_GCM})
		cancel()
		if err != nil {
			return nil, kc.explain(ctx, op+": create", err, keyHint)
		}
		fmt.Fprintf(e.stdout, "created key %s in the key broker (version %d); it has no release policy yet: set one with 'kbsctl policy put --key %s --file policy.json'\n",
			sanitize(c.keyID), created.GetKey().GetPrimaryVersion(), sanitize(c.keyID))
		version = created.GetKey().GetPrimaryVersion()
	} else if err != nil {
		return nil, kc.explain(ctx, op, err, keyHint)
	} else {
		k := got.GetKey()
		if k.GetState() != kbsv1.KeyState_KEY_STATE_ENABLED {
			return nil, fmt.Errorf("%s is %s in the key broker; models can only be encrypted under an enabled key ('kbsctl key get %s')", op, keyState(k.GetState()), sanitize(c.keyID))
		}
		if !explicit {
			version = k.GetPrimaryVersion()
		}
	}

	rk, err := kc.ExportKey(ctx, c.keyID, version)
	if err != nil {
		return nil, kc.explain(ctx, fmt.Sprintf("%s: export version %d", op, version), err, keyHint)
	}
	if rk.KeyID != c.keyID || rk.Version != version || len(rk.Key) != emdl.KeySize {
		rk.Zero()
		return nil, fmt.Errorf("%s: the key broker exported key %q version %d of %d bytes, want %q version %d of %d bytes; nothing was encrypted",
			op, sanitize(rk.KeyID), rk.Version, len(rk.Key), c.keyID, version, emdl.KeySize)
	}
	fmt.Fprintf(e.stdout, "using key %s version %d from the key broker (export request id %s, audited)\n", sanitize(c.keyID), rk.Version, sanitize(rk.RequestID))
	return rk, nil
}
