// Package emdl reads and writes EMDL v1, the encrypted model format: a
// directory holding one encrypted file per model file and an authenticated
// manifest. The format is specified in SPEC.md beside this file.
//
// Encrypt a model (a file or a directory) with a 32-byte data-encryption key:
//
//	sum, err := emdl.Encrypt(ctx, dek, "llama-3-8b/", "llama-3-8b.emdl/", emdl.EncryptOptions{
//		KeyID: "llama-3-8b", KeyVersion: 1,
//	})
//
// Read its public metadata without a key:
//
//	info, err := emdl.Inspect("llama-3-8b.emdl/")
//	fmt.Println(info.KeyID, info.KeyVersion, info.Files, info.TotalSize)
//
// Verify and decrypt it; nothing appears at the output unless the whole
// model verified:
//
//	sum, err := emdl.Decrypt(ctx, dek, "llama-3-8b.emdl/", "/models/llama-3-8b", emdl.DecryptOptions{
//		KeyID: "llama-3-8b", KeyVersion: 1,
//	})
//	switch {
//	case errors.Is(err, emdl.ErrWrongKey): // …
//	case errors.Is(err, emdl.ErrTampered): // …
//	}
//
// Every refusal is an *Error that names the file (its path within the model,
// or ManifestName) and wraps one sentinel (ErrWrongKey, ErrTampered, …).
//
// Encryption and decryption stream with bounded memory (a few chunk buffers
// per file in flight, whatever the model's size), process the files of a
// directory concurrently and, within a file, overlap reading, AES-GCM and
// writing. All of the format's cryptography is in primitives.go.
package emdl
