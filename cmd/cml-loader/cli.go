package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/cml-project/cml/client"
	"github.com/cml-project/cml/identity"
	"github.com/cml-project/cml/loader"
	"github.com/cml-project/cml/tdx/quote"
	"github.com/cml-project/cml/tdx/tdxsim"
)

const usageHead = `Usage: cml-loader --kbs ADDR --kbs-spiffe-id ID --key KEY --src DIR --dst PATH [flags]

Attests to the key broker (SPIFFE mTLS + a fresh Intel TDX quote), receives
the model key sealed to a key pair that never leaves this process, verifies
and decrypts the encrypted model at --src into --dst, and exits. Meant to run
as a Kubernetes init container; the inference container then reads plain
files from --dst.

Every flag can also be set with the environment variable shown; a flag on the
command line wins over the environment.

Flags:
`

const usageTail = `
--dst is either
  - a path that does not exist, in an existing directory (/models/llama-3-8b
    inside an emptyDir mounted at /models): the model is written to a hidden
    temporary name beside it and renamed to PATH once fully verified; or
  - an existing empty directory (the emptyDir mount point /models itself):
    the model is decrypted into PATH/.cml-loader-staging and, once verified,
    its top-level files and directories are moved into PATH.
A non-empty --dst is refused before attestation (exit 2). Leftovers of a
killed run (the hidden temporary, or .cml-loader-staging) are removed by the
next run.

Every chunk of every file is authenticated (AES-256-GCM, in order and
complete, under a key-committed header that the authenticated manifest
lists), so a model modified by anyone without the key is refused (exit 5)
either way. --verify-plaintext-hash adds the re-check of each file's SHA-256
against the manifest: it catches only an inconsistent encryptor that held
the key, and costs about 0.8 CPU-seconds per GiB that cannot be spread over
cores within a file, so it is off by default.

--timeout bounds the wait for the SPIRE agent and the key broker: while
either is unavailable the loader retries with backoff. It does not bound the
decryption. A refusal by the broker is never retried.

Exit codes:
  0  the model is decrypted at --dst; one JSON summary line was logged
  1  any other failure (I/O, quote provider, the broker's identity, ...)
  2  usage: a missing or invalid flag or environment value, or --dst is
     neither absent nor an empty directory
  3  denied by the key broker: the log line has the reason code and the
     request id of the broker's audit record
  4  the key broker or the SPIRE agent stayed unavailable until --timeout
  5  bad model: tampered, truncated or unsafe, wrong key, or the key id or
     version in the model header does not match --key, --key-version or
     what the broker released

Example (what the Kubernetes initContainer runs):
  cml-loader --kbs kbs.cml-system:8443 \
    --kbs-spiffe-id spiffe://example.org/ns/cml-system/sa/kbs \
    --key llama-3-8b --src /models-encrypted/llama-3-8b --dst /models/llama-3-8b
`

// flagDef is one flag: its name, value placeholder and environment variable.
type flagDef struct {
	name, arg, env string
}

type cliConfig struct {
	kbs, kbsID, key, src, dst         string
	keyVersion                        uint64
	socket, svidCert, svidKey, bundle string
	quoteProvider, simDir             string
	timeout                           time.Duration
	postQuantum, verifyHash           bool
	logLevel                          string
}

// newFlagSet defines every flag on a fresh FlagSet.
func newFlagSet(c *cliConfig) (*flag.FlagSet, []flagDef) {
	fs := flag.NewFlagSet("cml-loader", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var defs []flagDef
	str := func(p *string, name, arg, env, def, usage string) {
		fs.StringVar(p, name, def, usage)
		defs = append(defs, flagDef{name, arg, env})
	}
	str(&c.kbs, "kbs", "ADDR", "CML_KBS", "", "key broker address, host:port (required)")
	str(&c.kbsID, "kbs-spiffe-id", "ID", "CML_KBS_SPIFFE_ID", "", "SPIFFE ID the key broker must present (required)")
	str(&c.key, "key", "KEY", "CML_KEY", "", "key id of the model; the model header must name it (required)")
	fs.Uint64Var(&c.keyVersion, "key-version", 0, "key version to ask for; 0 means the version in the model header")
	defs = append(defs, flagDef{"key-version", "N", "CML_KEY_VERSION"})
	str(&c.src, "src", "DIR", "CML_SRC", "", "encrypted model directory (required)")
	str(&c.dst, "dst", "PATH", "CML_DST", "", "where the plaintext model goes: an absent path or an empty directory (required)")
	str(&c.socket, "spiffe-socket", "ADDR", "CML_SPIFFE_SOCKET", "", "SPIFFE Workload API socket (default $SPIFFE_ENDPOINT_SOCKET)")
	str(&c.svidCert, "svid-cert", "FILE", "CML_SVID_CERT", "", "X.509-SVID PEM file, instead of the Workload API")
	str(&c.svidKey, "svid-key", "FILE", "CML_SVID_KEY", "", "the SVID's PKCS#8 private key PEM file")
	str(&c.bundle, "bundle", "FILE", "CML_BUNDLE", "", "trust bundle PEM file")
	str(&c.quoteProvider, "quote-provider", "NAME", "CML_QUOTE_PROVIDER", "configfs", "TDX quote source: configfs (Linux configfs-tsm in a TD) or simulated")
	str(&c.simDir, "dev-insecure-simulated-tdx", "DIR", "CML_DEV_INSECURE_SIMULATED_TDX", "", "DEVELOPMENT ONLY: the tdxsim directory for --quote-provider simulated")
	fs.DurationVar(&c.timeout, "timeout", loader.DefaultTimeout, "how long to wait for the SPIRE agent and the key broker")
	defs = append(defs, flagDef{"timeout", "DURATION", "CML_TIMEOUT"})
	fs.BoolVar(&c.postQuantum, "post-quantum", false, "seal the key with the MLKEM768-X25519 hybrid KEM instead of X25519")
	defs = append(defs, flagDef{"post-quantum", "", "CML_POST_QUANTUM"})
	fs.BoolVar(&c.verifyHash, "verify-plaintext-hash", false, "also re-check each file's plaintext SHA-256 against the manifest (slower; see below)")
	defs = append(defs, flagDef{"verify-plaintext-hash", "", "CML_VERIFY_PLAINTEXT_HASH"})
	str(&c.logLevel, "log-level", "LEVEL", "CML_LOG_LEVEL", "info", "debug, info, warn or error")
	return fs, defs
}

func printUsage(w io.Writer) {
	var c cliConfig
	fs, defs := newFlagSet(&c)
	fmt.Fprint(w, usageHead)
	for _, d := range defs {
		f := fs.Lookup(d.name)
		head := "  --" + d.name
		if d.arg != "" {
			head += " " + d.arg
		}
		fmt.Fprintf(w, "%s  (%s)\n      %s", head, d.env, f.Usage)
		if f.DefValue != "" && f.DefValue != "0" && f.DefValue != "false" {
			fmt.Fprintf(w, " (default %s)", f.DefValue)
		}
		fmt.Fprintln(w)
	}
	fmt.Fprint(w, usageTail)
}

// usageError is a bad command line or environment (exit 2).
type usageError struct{ msg string }

func (u *usageError) Error() string { return u.msg }

// parse reads the command line, then the environment for every flag the
// command line did not set.
func parse(args []string, lookupEnv func(string) (string, bool)) (*cliConfig, error) {
	var c cliConfig
	fs, defs := newFlagSet(&c)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, err
		}
		return nil, &usageError{err.Error()}
	}
	if fs.NArg() > 0 {
		return nil, &usageError{fmt.Sprintf("unexpected argument %q (every setting is a flag)", fs.Arg(0))}
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	for _, d := range defs {
		if set[d.name] {
			continue
		}
		if v, ok := lookupEnv(d.env); ok && v != "" {
			if err := fs.Set(d.name, v); err != nil {
				return nil, &usageError{fmt.Sprintf("invalid value %q for %s: %v", v, d.env, err)}
			}
			set[d.name] = true
		}
	}
	// The Workload API is the default identity, from the variable SPIFFE
	// tooling sets, unless SVID files were given.
	if c.socket == "" && c.svidCert == "" && c.svidKey == "" && c.bundle == "" {
		c.socket, _ = lookupEnv("SPIFFE_ENDPOINT_SOCKET")
	}
	if c.keyVersion > 1<<32-1 {
		return nil, &usageError{fmt.Sprintf("--key-version %d is beyond 4294967295", c.keyVersion)}
	}
	return &c, nil
}

// run is the whole program; it returns the exit code.
func run(ctx context.Context, args []string, lookupEnv func(string) (string, bool), stdout, stderr io.Writer) int {
	c, err := parse(args, lookupEnv)
	if errors.Is(err, flag.ErrHelp) {
		printUsage(stdout)
		return loader.ExitOK
	}
	if err != nil {
		return usage(stderr, err)
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.logLevel)); err != nil {
		return usage(stderr, fmt.Errorf("invalid --log-level %q (debug, info, warn or error)", c.logLevel))
	}
	log := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: level}))

	cfg, err := loaderConfig(c, log)
	if err != nil {
		return usage(stderr, err)
	}
	_, err = loader.Run(ctx, cfg)
	code := loader.ExitCode(err)
	if code == loader.ExitUsage {
		return usage(stderr, err)
	}
	if err != nil {
		attrs := []any{"error", err.Error(), "exit_code", code}
		if reason, requestID, ok := client.ReasonOf(err); ok {
			attrs = append(attrs, "reason", reason, "request_id", requestID)
		}
		log.Error("cml-loader failed", attrs...)
	}
	return code
}

func usage(w io.Writer, err error) int {
	fmt.Fprintf(w, "cml-loader: %s\nRun 'cml-loader --help' for usage.\n", strings.TrimPrefix(err.Error(), "loader: "))
	return loader.ExitUsage
}

// loaderConfig turns the flags into a loader.Config, building the quote
// provider.
func loaderConfig(c *cliConfig, log *slog.Logger) (loader.Config, error) {
	cfg := loader.Config{
		KBS:         c.kbs,
		KeyID:       c.key,
		KeyVersion:  uint32(c.keyVersion),
		Src:         c.src,
		Dst:         c.dst,
		Identity:    identity.Config{Socket: c.socket, SVIDCert: c.svidCert, SVIDKey: c.svidKey, Bundle: c.bundle, Logger: log},
		Timeout:     c.timeout,
		PostQuantum: c.postQuantum,
		Logger:      log,

		VerifyPlaintextHash: c.verifyHash,
	}
	// An empty --kbs-spiffe-id is reported by loader.Run with the other
	// missing settings.
	if c.kbsID != "" {
		id, err := spiffeid.FromString(c.kbsID)
		if err != nil {
			return cfg, fmt.Errorf("invalid --kbs-spiffe-id %q: %v", c.kbsID, err)
		}
		cfg.KBSID = id
	}
	if c.timeout <= 0 {
		return cfg, fmt.Errorf("--timeout %s must be positive", c.timeout)
	}
	switch c.quoteProvider {
	case "configfs":
		if c.simDir != "" {
			return cfg, errors.New("--dev-insecure-simulated-tdx needs --quote-provider simulated")
		}
		cfg.Quote = &lazyConfigFS{}
	case "simulated":
		if c.simDir == "" {
			return cfg, errors.New("--quote-provider simulated needs --dev-insecure-simulated-tdx DIR (a tdxsim directory)")
		}
		sim, err := tdxsim.Load(c.simDir)
		if err != nil {
			return cfg, fmt.Errorf("--dev-insecure-simulated-tdx: %v", err)
		}
		log.Warn("DEVELOPMENT ONLY: quotes come from the TDX simulator, not from a TD; the model key is released only by a broker that trusts the simulator, and this pod has no confidentiality", "simulator", c.simDir)
		cfg.Quote = quote.NewSimulated(sim, sim.DefaultTD())
	default:
		return cfg, fmt.Errorf("invalid --quote-provider %q (configfs or simulated)", c.quoteProvider)
	}
	return cfg, nil
}

// lazyConfigFS opens configfs-tsm at the first quote, so that a bad command
// line or model is reported as such even outside a TD.
type lazyConfigFS struct {
	once sync.Once
	p    *quote.ConfigFS
	err  error
}

func (l *lazyConfigFS) GetQuote(ctx context.Context, reportData [64]byte) ([]byte, error) {
	l.once.Do(func() {
		l.p, l.err = quote.NewConfigFS()
		if l.err != nil {
			l.err = fmt.Errorf("configfs-tsm (is this a TDX guest with Linux 6.7 or later?): %w", l.err)
		}
	})
	if l.err != nil {
		return nil, l.err
	}
	return l.p.GetQuote(ctx, reportData)
}
