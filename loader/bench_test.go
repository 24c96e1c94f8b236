package loader_test

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/cml-project/cml/client/clienttest"
	"github.com/cml-project/cml/emdl"
	"github.com/cml-project/cml/loader"
)

// BenchmarkRun is one whole loader run against an in-process broker on
// loopback mTLS: TLS handshake, challenge, simulated quote, verification,
// release, and the decryption of a 256 MiB model into a temporary
// directory. It reports the attestation time and the decryption throughput.
func BenchmarkRun(b *testing.B) {
	br := clienttest.New(b, clienttest.Options{})
	dek := br.ImportKey(b, keyID, br.DefaultPolicy())
	plain := b.TempDir()
	data := make([]byte, 256<<20)
	if err := os.WriteFile(filepath.Join(plain, "weights.bin"), data, 0o644); err != nil {
		b.Fatal(err)
	}
	src := filepath.Join(b.TempDir(), "m.emdl")
	if _, err := emdl.Encrypt(context.Background(), dek, plain, src, emdl.EncryptOptions{KeyID: keyID, KeyVersion: 1}); err != nil {
		b.Fatal(err)
	}
	os.RemoveAll(plain)
	out := b.TempDir()
	var att, dec float64
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		dst := filepath.Join(out, strconv.Itoa(i))
		sum, err := loader.Run(context.Background(), loader.Config{
			KBS: br.Addr, KBSID: br.KBSID, KeyID: keyID, Src: src, Dst: dst,
			Source: br.Source(b, br.LoaderID), Quote: br.Quoter(),
		})
		if err != nil {
			b.Fatal(err)
		}
		att += float64(sum.Attestation.Microseconds()) / 1000
		dec += sum.Decryption.Seconds()
		b.StopTimer()
		os.RemoveAll(dst)
		b.StartTimer()
	}
	b.ReportMetric(att/float64(b.N), "attestation-ms/op")
	b.ReportMetric(float64(len(data))*float64(b.N)/1e6/dec, "decrypt-MB/s")
}
