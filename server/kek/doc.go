// Package kek provides the key-encryption key (KEK) that seals every secret
// the key broker keeps at rest.
//
// Usage:
//
//	// once, at install time (what `kbs init` does):
//	if err := kek.Init("/var/lib/kbs/kek.hex"); err != nil { ... }
//
//	// at every start:
//	p, err := kek.LoadFile("/var/lib/kbs/kek.hex")
//	// or, when the KEK comes from the environment (CML_KEK=<64 hex digits>):
//	p, err := kek.LoadEnv(os.LookupEnv)
//
//	sealed, err := p.Seal(ctx, dek, aad)
//	dek, err := p.Open(ctx, sealed, aad)
//
// # Provider
//
// [Provider] is the whole contract the keystore needs: Seal and Open with
// additional authenticated data. It is shaped like the encrypt/decrypt calls of
// a PKCS#11 token or a cloud KMS (which take a plaintext, an AAD or
// "encryption context", and return a self-contained ciphertext), so such a
// backend can implement it without ever exposing its key.
//
// [Local] is the in-process implementation: AES-256-GCM with a random 96-bit
// nonce per Seal (crypto/cipher.NewGCMWithRandomNonce). A sealed value is
// nonce(12) ‖ ciphertext ‖ tag(16). Random nonces bound the number of Seal
// calls under one KEK to 2^32 (NIST SP 800-38D §8.3, collision probability
// ≤ 2^-32); the keystore seals once per key version plus twice at database
// creation, many orders of magnitude below that bound.
//
// # KEK file format
//
// Exactly 64 hexadecimal digits (upper or lower case) encoding 32 random
// bytes, optionally followed by one "\n" (or "\r\n"). Nothing else: no
// spaces, no comments. [Init] writes lower-case hex and a newline, with mode
// 0600, refusing to overwrite an existing file (O_EXCL). [LoadFile] refuses a
// file whose mode grants any permission to group or others, naming the file
// and the fix ("chmod 600 FILE"). In Kubernetes, mount the Secret with
// defaultMode 0400. The CML_KEK environment variable uses the same format.
//
// Nothing in this package logs, and no error or String method ever contains
// key bytes.
package kek
