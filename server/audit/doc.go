// Package audit defines the key broker's audit records: what one holds, its
// canonical binary encoding, the SHA-256 hash chain that links the records,
// and the verifier that walks a chain and names the first bad record.
//
// Usage:
//
//	e := audit.Entry{
//		RequestID: reqID, Caller: spiffeID, Operation: "ReleaseKey",
//		KeyID: "llama-3-8b", KeyVersion: 2, PolicyVersion: 7,
//		Decision: audit.Deny, Reasons: []string{"mrtd_not_allowed"},
//		QuoteDigest: audit.Digest(quote), NonceDigest: audit.Digest(nonce),
//		Measurements: map[string]string{"mrtd": hex.EncodeToString(mrtd)},
//	}
//	rec, err := st.AppendAudit(ctx, e) // *store.Store assigns Seq, Time, PrevHash
//
//	v := audit.NewVerifier()
//	for each stored (seq, raw) in order { if err := v.Add(seq, raw); err != nil { ... } }
//	report, err := v.Finish(authenticatedHead)
//
// The package holds no state and does no I/O; persistence and the
// authenticated chain head live in server/store.
//
// # What a record may contain
//
// An [Entry] carries no secret: no key bytes, no nonce in clear (a nonce only
// as its SHA-256, [Entry.NonceDigest]), no quote (only its SHA-256). Every
// field has a fixed syntax checked by [Entry.Validate] before a record is
// encoded and after one is decoded; free text is limited to [Entry.Details],
// whose values are short printable strings in which a run of 32 or more hex
// digits or 43 or more base64 characters (16 or 32 bytes of binary data) is
// refused. Hex values belong in the typed digest and measurement fields.
//
// # Canonical encoding (format 1)
//
// All integers are big-endian. str is a u32 byte length followed by UTF-8
// bytes; list is a u32 count followed by that many str; map is a u32 count
// followed by that many (str name, str value) pairs in strictly ascending
// byte order of name (so names are unique).
//
//	"CMLAUDIT" (8 bytes) ‖ u8 format = 1
//	‖ u64 seq ‖ i64 time (Unix nanoseconds, UTC) ‖ prev_hash (32 bytes)
//	‖ str request_id ‖ str caller ‖ str operation ‖ str key_id
//	‖ u32 key_version ‖ u32 policy_version ‖ u8 decision (1 allow, 2 deny)
//	‖ list reasons (in the caller's order)
//	‖ str quote_digest ‖ str nonce_digest
//	‖ map measurements ‖ u8 simulated (0 or 1) ‖ map details
//
// The hash of a record is SHA-256 of that encoding. The first record has
// seq 1 and prev_hash 32 zero bytes; record n has prev_hash = hash of record
// n−1. [Decode] accepts exactly the encodings [Record.Encode] produces
// (Encode(Decode(b)) == b), so a record has one encoding and one hash.
package audit
