// Package store is the key broker's keystore: versioned 256-bit DEKs sealed
// under a KEK, each key's versioned release policies, and the hash-chained
// audit log, in one bbolt file. It is the only package that imports bbolt.
//
// Usage:
//
//	// kbs init --data-dir D
//	err := store.Init(ctx, D, store.Options{Now: time.Now}) // D/kek.hex + D/keystore.db
//
//	// kbs serve
//	p, err := kek.LoadFile(store.KEKPath(D)) // or kek.LoadEnv(os.LookupEnv)
//	st, err := store.Open(ctx, store.DBPath(D), store.Options{KEK: p, Now: time.Now})
//	defer st.Close()
//
//	k, err := st.CreateKey(ctx, "llama-3-8b", store.KeyOptions{Description: "Llama 3 8B"})
//	k, err = st.RotateKey(ctx, "llama-3-8b")
//	k, err = st.DestroyVersion(ctx, "llama-3-8b", 1) // never the primary
//	pol, err := st.PutPolicy(ctx, "llama-3-8b", policyBytes)
//	dek, version, err := st.UnwrapKey(ctx, "llama-3-8b", 0) // 0: primary; clear(dek) when done
//	rec, err := st.AppendAudit(ctx, audit.Entry{...})
//	report, err := st.VerifyAudit(ctx)
//
//	// kbs compact, with the broker stopped: drop the free pages that may
//	// still hold destroyed keys' sealed bytes
//	res, err := store.Compact(ctx, store.DBPath(D), store.Options{KEK: p, Now: time.Now})
//
// Tests of other packages get a throwaway store from
// server/store/storetest.
//
// # Keys
//
// A key has an id ([A-Za-z0-9._-]{1,128}, see ValidateKeyID), a
// description, labels, a state, and versions 1…n, each with its own state;
// the last version added is primary. CreateKey and RotateKey draw 32 bytes
// from Options.Rand; ImportKey and ImportVersion take the caller's.
// DisableKey stops every version, DisableVersion one version; both are
// undone by the Enable calls. DestroyKey deletes the sealed bytes of every
// version and keeps the metadata as a tombstone: the id can never be
// created or imported again (ErrKeyDestroyed). DestroyVersion deletes the
// sealed bytes of one version and keeps its metadata in state destroyed;
// it refuses the primary version (ErrPrimaryVersion: rotate first, or
// destroy the whole key). Both are idempotent. Metadata reads never return
// key bytes; only UnwrapKey does, and it refuses disabled versions and keys
// (ErrKeyDisabled) and destroyed versions and keys (ErrKeyDestroyed).
//
// # Sealing
//
// Every secret is sealed by the kek.Provider with additional data
// "cml/v1/keystore" ‖ 0x00 ‖ u16 len(kind) ‖ kind ‖ u16 len(key id) ‖ key id ‖
// u32 version (big-endian), so a sealed value copied to another key,
// version or kind does not open (ErrCorrupt). A KEK check value sealed at
// creation makes Open fail at once with ErrWrongKEK under another KEK.
//
// # Writes and durability
//
// Every write runs in bbolt's Batch, so concurrent writers (admin calls,
// audit appends) share one commit and one fsync; a call returns only after
// its commit is on disk. Batch may run a write function more than once, so
// each one derives its result from the transaction alone. Sealing happens
// outside write transactions.
//
// # Audit
//
// AppendAudit assigns the sequence number, time and previous hash inside the
// write transaction and stores the canonical encoding of package audit. The
// chain head (last seq and hash) is kept beside it with an HMAC-SHA256 under
// a random key that is itself sealed under the KEK, so deleting records at
// the end or rewriting the whole chain is detected by whoever holds the KEK.
//
// The bucket layout and formats are in docs/keystore.md.
package store
