// Package loader is the logic of cml-loader, the Kubernetes init container
// that makes an encrypted model readable inside a confidential VM: it
// attests to the key broker, receives the model key, decrypts the model into
// a (usually in-memory) volume, and exits.
//
//	sum, err := loader.Run(ctx, loader.Config{
//		KBS:      "kbs.cml-system:8443",
//		KBSID:    spiffeid.RequireFromString("spiffe://example.org/ns/cml-system/sa/kbs"),
//		KeyID:    "llama-3-8b",
//		Src:      "/models-encrypted/llama-3-8b",
//		Dst:      "/models/llama-3-8b",
//		Identity: identity.Config{Socket: "unix:///run/spire/agent-sockets/agent.sock"},
//		Quote:    configfsProvider, // quote.NewConfigFS()
//		Logger:   logger,
//	})
//	os.Exit(loader.ExitCode(err))
//
// Run, in order:
//
//  1. reads the model's header (emdl.Inspect) and refuses a model whose key
//     id is not Config.KeyID, or whose version is not Config.KeyVersion when
//     that is set;
//  2. checks Dst (below) before asking the broker for anything;
//  3. connects to the broker with mTLS (the SVID from the SPIRE agent or
//     files, the broker's SPIFFE ID pinned) and runs the key release
//     protocol for exactly the header's key version, retrying while the
//     agent or the broker is unavailable, up to Config.Timeout;
//  4. checks the released key id and version against the header and
//     decrypts with emdl.Decrypt, which authenticates the manifest and
//     every chunk before anything appears at Dst (the whole-file plaintext
//     SHA-256 re-check only with Config.VerifyPlaintextHash);
//  5. zeroes the key and logs one JSON summary line.
//
// # Where the model goes
//
// Dst may be either
//
//   - a path that does not exist, whose parent does (/models/llama-3-8b
//     inside an emptyDir mounted at /models): the model is decrypted to a
//     temporary ".llama-3-8b.emdl-partial-*" beside it and renamed to Dst at
//     the end, atomically;
//   - an existing empty directory (the emptyDir mount point /models itself,
//     which cannot be renamed over): the model is decrypted into
//     Dst/.cml-loader-staging and, once verified, its top-level entries are
//     renamed into Dst; nothing is written outside Dst. A single-file model
//     becomes Dst/<its file name>.
//
// Anything else — a file, a non-empty directory — is refused (ExitUsage)
// before attestation. A run that was killed leaves either an unlocked
// partial beside Dst, removed by the next run, or the staging directory in
// Dst; the next run then removes everything in Dst (it all came from the
// interrupted run, which started from an empty directory) and starts over.
// Run one loader per Dst at a time.
//
// # Exit codes
//
// ExitCode maps Run's error: 0 ok, 2 bad usage (or Dst not absent/empty),
// 3 denied by the broker (the reason code and request id are in the error,
// see client.ReasonOf), 4 the broker or the SPIRE agent unavailable until
// the timeout, 5 bad model (tampered, wrong key, key id/version mismatch,
// unsafe path), 1 anything else.
package loader
