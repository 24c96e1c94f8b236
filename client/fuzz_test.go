package client

import (
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/cml-project/cml/keyrelease"
	kbsv1 "github.com/cml-project/cml/proto/cml/kbs/v1"
)

// FuzzReleaseResponse feeds arbitrary ReleaseKeyResponse messages to the
// client's checks and opening. None may panic, and none may be accepted:
// nothing in the corpus is sealed to the fresh key pair of the run.
func FuzzReleaseResponse(f *testing.F) {
	nonce := make([]byte, keyrelease.NonceSize)
	_, otherPub, err := keyrelease.GenerateKey(keyrelease.KEMX25519)
	if err != nil {
		f.Fatal(err)
	}
	enc, ct, err := keyrelease.Seal(keyrelease.KEMX25519, otherPub, keyrelease.ReleaseInfo("m", 1, nonce), make([]byte, 32))
	if err != nil {
		f.Fatal(err)
	}
	seed, _ := proto.Marshal(&kbsv1.ReleaseKeyResponse{
		SealedKey: &kbsv1.SealedKey{KemId: kbsv1.HpkeKem_HPKE_KEM_DHKEM_X25519_HKDF_SHA256, Enc: enc, Ciphertext: ct},
		KeyId:     "m", KeyVersion: 1, Algorithm: kbsv1.KeyAlgorithm_KEY_ALGORITHM_AES_256_GCM, RequestId: "r",
	})
	f.Add(seed, uint32(0))
	f.Add(seed, uint32(1))
	f.Add([]byte{}, uint32(0))

	priv, _, err := keyrelease.GenerateKey(keyrelease.KEMX25519)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, raw []byte, version uint32) {
		var resp kbsv1.ReleaseKeyResponse
		if proto.Unmarshal(raw, &resp) != nil {
			return
		}
		if checkResponse("ReleaseKey", "m", version, keyrelease.KEMX25519, resp.GetKeyId(), resp.GetKeyVersion(), resp.GetSealedKey()) != nil {
			return
		}
		info := keyrelease.ReleaseInfo(resp.GetKeyId(), resp.GetKeyVersion(), nonce)
		if rk, err := open(priv, info, resp.GetSealedKey(), resp.GetAlgorithm(), &ReleasedKey{}); err == nil {
			t.Fatalf("accepted a key not sealed to our public key: %+v", rk)
		}
	})
}

// FuzzKeyID checks that checkKeyID accepts exactly the protocol's syntax
// and that printable output stays printable.
func FuzzKeyID(f *testing.F) {
	for _, s := range []string{"llama-3-8b", "", "a/b", "\x00", "ü", "a.b_c-D9"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, id string) {
		err := checkKeyID(id)
		ok := len(id) >= 1 && len(id) <= maxKeyIDLen
		for i := 0; i < len(id); i++ {
			c := id[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
				ok = false
			}
		}
		if (err == nil) != ok {
			t.Fatalf("checkKeyID(%q) = %v, want ok=%v", id, err, ok)
		}
		p := printable(id)
		for i := 0; i < len(p); i++ {
			if p[i] < 0x20 || p[i] >= 0x7f {
				t.Fatalf("printable(%q) = %q", id, p)
			}
		}
		if err != nil && len(err.Error()) > 400 {
			t.Fatalf("error for a %d-byte id is %d bytes long", len(id), len(err.Error()))
		}
	})
}
