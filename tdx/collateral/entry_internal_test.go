package collateral

import (
	"bytes"
	"encoding/hex"
	"encoding/pem"
	"testing"
)

func TestNormalizeCRL(t *testing.T) {
	der := []byte{0x30, 0x03, 0x02, 0x01, 0x01}
	for name, in := range map[string][]byte{
		"der": der,
		"hex": []byte(hex.EncodeToString(der) + "\n"),
		"HEX": []byte(bytes.ToUpper([]byte(hex.EncodeToString(der)))),
		"pem": pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der}),
	} {
		if got := normalizeCRL(in); !bytes.Equal(got, der) {
			t.Errorf("%s: got %x", name, got)
		}
	}
	junk := []byte("not a crl")
	if got := normalizeCRL(junk); !bytes.Equal(got, junk) {
		t.Error("junk was changed")
	}
}
