package quote_test

import (
	"bytes"
	"context"
	"testing"

	"github.com/cml-project/cml/tdx/quote"
)

// FuzzConfigFSOutput: whatever the kernel hands back, GetQuote does not
// panic, and returns it unchanged only if it looks like a TDX quote v4.
// Seeds in testdata/fuzz/FuzzConfigFSOutput.
func FuzzConfigFSOutput(f *testing.F) {
	f.Add([]byte{4, 0, 2, 0, 0x81, 0, 0, 0})
	f.Fuzz(func(t *testing.T, out []byte) {
		p := quote.NewConfigFSWithClient(fakeTSM("tdx_guest", func([]byte) ([]byte, error) { return out, nil }))
		q, err := p.GetQuote(context.Background(), [64]byte{})
		if err != nil {
			return
		}
		if !bytes.Equal(q, out) || len(q) < 8 || q[0] != 4 || q[4] != 0x81 {
			t.Fatalf("accepted %x", q)
		}
	})
}
