package verifier

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"testing"
)

func BenchmarkZZECDSAVerify(b *testing.B) {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	d := sha256.Sum256([]byte("x"))
	sig, _ := ecdsa.SignASN1(rand.Reader, k, d[:])
	cpu0 := processCPUTime()
	defer func() { b.ReportMetric(float64((processCPUTime()-cpu0).Nanoseconds())/float64(b.N), "cpu-ns/op") }()
	for b.Loop() {
		if !ecdsa.VerifyASN1(&k.PublicKey, d[:], sig) {
			b.Fatal("bad")
		}
	}
}
