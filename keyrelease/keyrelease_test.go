package keyrelease

import (
	"bytes"
	"encoding/hex"
	"errors"
	"testing"
)

// The known answers below were computed independently with Python's hashlib
// and struct from the byte layout in the package documentation.

func TestReportDataKnownAnswer(t *testing.T) {
	nonce := make([]byte, 32)
	for i := range nonce {
		nonce[i] = byte(i)
	}
	x := bytes.Repeat([]byte{0xaa}, 32)
	mlkem := make([]byte, 1216)
	for i := range mlkem {
		mlkem[i] = byte(i)
	}
	for _, tc := range []struct {
		kem  KEM
		pub  []byte
		want string
	}{
		{KEMX25519, x, "909a77ccc16fece5dec8b76c98284eff9ff6c53269b351b23649d859e1cbaf7d0218e36e0099a48ff1968c592d335336cc8d71b24914750549ab5ca33f1619eb"},
		{KEMMLKEM768X25519, mlkem, "b104c902d512161a299937cef7478b4606d74875e96d042a0245819e3f19ec1a29743148b0cb88953d5e499e1f4f4c66ca61a2da6515464afe27ee68528d9f4a"},
	} {
		got := ReportData(nonce, tc.kem, tc.pub)
		if hex.EncodeToString(got[:]) != tc.want {
			t.Errorf("ReportData(%s) = %x, want %s", tc.kem, got, tc.want)
		}
	}
}

func TestReportDataBindsEveryInput(t *testing.T) {
	nonce := bytes.Repeat([]byte{1}, 32)
	pub := bytes.Repeat([]byte{2}, 32)
	base := ReportData(nonce, KEMX25519, pub)
	variants := map[string][64]byte{
		"nonce": ReportData(bytes.Repeat([]byte{3}, 32), KEMX25519, pub),
		"kem":   ReportData(nonce, KEMMLKEM768X25519, pub),
		"pub":   ReportData(nonce, KEMX25519, bytes.Repeat([]byte{4}, 32)),
		// Moving a byte from the nonce into the key changes the length prefix.
		"split": ReportData(nonce[:31], KEMX25519, append([]byte{1}, pub...)),
	}
	for name, v := range variants {
		if v == base {
			t.Errorf("changing %s does not change REPORTDATA", name)
		}
	}
}

func TestInfoKnownAnswer(t *testing.T) {
	nonce := make([]byte, 32)
	for i := range nonce {
		nonce[i] = byte(i)
	}
	rel := ReleaseInfo("llama-3-8b", 2, nonce)
	if want := "636d6c2f76312f6b65792d72656c6561736500000a6c6c616d612d332d386200000002000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"; hex.EncodeToString(rel) != want {
		t.Errorf("ReleaseInfo = %x, want %s", rel, want)
	}
	exp := ExportInfo("llama-3-8b", 2)
	if want := "636d6c2f76312f6b65792d6578706f727400000a6c6c616d612d332d386200000002"; hex.EncodeToString(exp) != want {
		t.Errorf("ExportInfo = %x, want %s", exp, want)
	}
	// Ambiguity checks: a shifted boundary between key id and version gives
	// another info.
	if bytes.Equal(ExportInfo("a", 0x62000000), ExportInfo("ab", 0)) {
		t.Error("ExportInfo is ambiguous")
	}
	if bytes.HasPrefix(ReleaseInfo("k", 1, nil), ExportInfo("k", 1)) {
		t.Error("a release info starts with an export info")
	}
}

func TestSealOpen(t *testing.T) {
	for _, kem := range []KEM{KEMX25519, KEMMLKEM768X25519} {
		t.Run(kem.String(), func(t *testing.T) {
			priv, pub, err := GenerateKey(kem)
			if err != nil {
				t.Fatal(err)
			}
			if len(pub) != kem.PublicKeySize() {
				t.Fatalf("public key is %d bytes, want %d", len(pub), kem.PublicKeySize())
			}
			key := bytes.Repeat([]byte{0x5c}, 32)
			info := ReleaseInfo("k", 1, bytes.Repeat([]byte{9}, 32))
			enc, ct, err := Seal(kem, pub, info, key)
			if err != nil {
				t.Fatal(err)
			}
			if len(enc) != kem.EncSize() || len(ct) != len(key)+16 {
				t.Fatalf("enc %d bytes, ciphertext %d bytes; want %d and %d", len(enc), len(ct), kem.EncSize(), len(key)+16)
			}
			got, err := Open(priv, info, enc, ct)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, key) {
				t.Fatal("opened key differs")
			}

			// Wrong info: another version, the export label, another nonce.
			for name, bad := range map[string][]byte{
				"version": ReleaseInfo("k", 2, bytes.Repeat([]byte{9}, 32)),
				"export":  ExportInfo("k", 1),
				"nonce":   ReleaseInfo("k", 1, bytes.Repeat([]byte{8}, 32)),
			} {
				if _, err := Open(priv, bad, enc, ct); !errors.Is(err, ErrOpen) {
					t.Errorf("open with wrong %s info: err = %v, want ErrOpen", name, err)
				}
			}
			// Wrong private key.
			other, _, err := GenerateKey(kem)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := Open(other, info, enc, ct); !errors.Is(err, ErrOpen) {
				t.Errorf("open with wrong key: err = %v, want ErrOpen", err)
			}
			// Tampering.
			ct2 := bytes.Clone(ct)
			ct2[0] ^= 1
			if _, err := Open(priv, info, enc, ct2); !errors.Is(err, ErrOpen) {
				t.Errorf("open tampered ciphertext: err = %v, want ErrOpen", err)
			}
			enc2 := bytes.Clone(enc)
			enc2[len(enc2)-1] ^= 1
			if _, err := Open(priv, info, enc2, ct); !errors.Is(err, ErrOpen) {
				t.Errorf("open tampered enc: err = %v, want ErrOpen", err)
			}
			if _, err := Open(priv, info, enc[:len(enc)-1], ct); !errors.Is(err, ErrOpen) {
				t.Errorf("open short enc: err = %v, want ErrOpen", err)
			}
		})
	}
}

func TestPublicKeyValidation(t *testing.T) {
	for _, tc := range []struct {
		kem  KEM
		pub  []byte
		want error
	}{
		{KEMX25519, make([]byte, 31), ErrInvalidPublicKey},
		{KEMX25519, make([]byte, 33), ErrInvalidPublicKey},
		{KEMX25519, nil, ErrInvalidPublicKey},
		{KEMMLKEM768X25519, make([]byte, 32), ErrInvalidPublicKey},
		{KEMMLKEM768X25519, make([]byte, 1215), ErrInvalidPublicKey},
		{KEM(0), make([]byte, 32), ErrUnsupportedKEM},
		{KEM(0x0010), make([]byte, 65), ErrUnsupportedKEM}, // P-256: a valid HPKE KEM, not ours
		{KEM(0x0041), make([]byte, 1184), ErrUnsupportedKEM},
	} {
		if err := CheckPublicKey(tc.kem, tc.pub); !errors.Is(err, tc.want) {
			t.Errorf("CheckPublicKey(%s, %d bytes) = %v, want %v", tc.kem, len(tc.pub), err, tc.want)
		}
		if _, _, err := Seal(tc.kem, tc.pub, nil, make([]byte, 32)); !errors.Is(err, tc.want) {
			t.Errorf("Seal(%s, %d bytes) = %v, want %v", tc.kem, len(tc.pub), err, tc.want)
		}
	}
	// An all-zero X25519 key has the right length but is a low-order point:
	// encapsulation fails, and Seal says so instead of sealing to it.
	if _, _, err := Seal(KEMX25519, make([]byte, 32), nil, make([]byte, 32)); !errors.Is(err, ErrInvalidPublicKey) {
		t.Errorf("Seal to the zero X25519 point: err = %v, want ErrInvalidPublicKey", err)
	}
	if _, _, err := GenerateKey(KEM(0x0010)); !errors.Is(err, ErrUnsupportedKEM) {
		t.Errorf("GenerateKey(P-256) = %v, want ErrUnsupportedKEM", err)
	}
	if _, err := Open(nil, nil, nil, nil); !errors.Is(err, ErrOpen) {
		t.Errorf("Open(nil key) = %v, want ErrOpen", err)
	}
}

func TestKEMNames(t *testing.T) {
	if KEMX25519.String() != "X25519" || KEMMLKEM768X25519.String() != "MLKEM768X25519" || KEM(7).String() != "KEM(0x0007)" {
		t.Error("unexpected KEM names")
	}
	if KEM(7).Supported() || KEM(7).PublicKeySize() != 0 || KEM(7).EncSize() != 0 {
		t.Error("unsupported KEM reports sizes")
	}
}

// FuzzOpen feeds arbitrary enc and ciphertext to Open: it must return an
// error (never panic), and never a key for anything but the genuine pair.
func FuzzOpen(f *testing.F) {
	priv, pub, err := GenerateKey(KEMX25519)
	if err != nil {
		f.Fatal(err)
	}
	info := ExportInfo("k", 1)
	enc, ct, err := Seal(KEMX25519, pub, info, make([]byte, 32))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(enc, ct)
	f.Fuzz(func(t *testing.T, e, c []byte) {
		key, err := Open(priv, info, e, c)
		if err == nil && (!bytes.Equal(e, enc) || !bytes.Equal(c, ct)) {
			// HPKE ciphertexts are not malleable: only the genuine pair opens.
			t.Fatalf("a modified sealed key opened to %d bytes", len(key))
		}
	})
}

// FuzzCheckPublicKey: arbitrary bytes as a public key of each KEM never
// panic, and a key accepted has the KEM's size.
func FuzzCheckPublicKey(f *testing.F) {
	f.Add(uint16(KEMX25519), make([]byte, 32))
	f.Add(uint16(KEMMLKEM768X25519), make([]byte, 1216))
	f.Fuzz(func(t *testing.T, kem uint16, pub []byte) {
		if err := CheckPublicKey(KEM(kem), pub); err == nil && len(pub) != KEM(kem).PublicKeySize() {
			t.Fatalf("accepted a %d-byte key for %s", len(pub), KEM(kem))
		}
	})
}
