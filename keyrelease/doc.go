// Package keyrelease is the cryptography of the key release protocol
// (DESIGN §4), shared by the key broker and its clients: the REPORTDATA
// binding of a challenge nonce and an ephemeral HPKE public key, and the HPKE
// sealing of a key to that public key.
//
// Usage, the workload (loader) side:
//
//	priv, pub, err := keyrelease.GenerateKey(keyrelease.KEMX25519)
//	rd := keyrelease.ReportData(nonce, keyrelease.KEMX25519, pub) // ask the TD for a quote over rd
//	// ... ReleaseKey(key_id, key_version, nonce, quote, kem_id, pub) ...
//	info := keyrelease.ReleaseInfo(resp.KeyId, resp.KeyVersion, nonce)
//	dek, err := keyrelease.Open(priv, info, resp.SealedKey.Enc, resp.SealedKey.Ciphertext)
//	defer clear(dek)
//
// The broker side:
//
//	if err := keyrelease.CheckPublicKey(kem, pub); err != nil { ... }
//	want := keyrelease.ReportData(nonce, kem, pub) // compare with the quote's REPORTDATA
//	enc, ct, err := keyrelease.Seal(kem, pub, keyrelease.ReleaseInfo(keyID, version, nonce), dek)
//
// kbsctl's export (AdminService.ExportKey) uses ExportInfo instead of
// ReleaseInfo, so a key sealed for export can never be mistaken for a
// release and vice versa.
//
// # Suites
//
// HPKE (RFC 9180) base mode, single shot, with KDF HKDF-SHA256 (0x0001) and
// AEAD AES-256-GCM (0x0002), and one of two KEMs:
//
//	KEMX25519          0x0020  DHKEM(X25519, HKDF-SHA256)  pub 32 B, enc 32 B
//	KEMMLKEM768X25519  0x647a  MLKEM768-X25519 (X-Wing)    pub 1216 B, enc 1120 B
//
// The KEM numbers equal the cml.kbs.v1 HpkeKem enum values, so
// keyrelease.KEM(req.KemId) converts a request's KEM. Anything else is
// refused with ErrUnsupportedKEM. The implementation is the standard library's
// crypto/hpke.
//
// # Exact bytes
//
// All integers are big-endian. ‖ is concatenation.
//
// REPORTDATA, the 64 bytes the TD puts in its quote:
//
//	SHA-512( "cml/v1/report-data" ‖ 0x00 ‖ nonce ‖ u16 kem_id ‖ u16 len(pub) ‖ pub )
//
// The nonce is the 32 bytes from GetChallenge; its length is fixed by the
// protocol, and the fields after it are length-prefixed, so the encoding is
// unambiguous. The nonce is inside a hash: the quote never carries it in
// clear.
//
// HPKE info of a release:
//
//	"cml/v1/key-release" ‖ 0x00 ‖ u16 len(key_id) ‖ key_id ‖ u32 key_version ‖ nonce
//
// HPKE info of an export:
//
//	"cml/v1/key-export" ‖ 0x00 ‖ u16 len(key_id) ‖ key_id ‖ u32 key_version
//
// key_version is the version actually sealed (never 0: the broker resolves
// "primary" first and returns the version in its response). The labels
// differ and are followed by a 0x00 that cannot occur inside a label, so no
// release info equals an export info or a REPORTDATA preimage. The nonce is
// the last field of a release info, so its length needs no prefix.
//
// The AEAD plaintext is the raw key (32 bytes for an AES-256-GCM model key);
// no associated data is used, everything binding is in info.
package keyrelease
