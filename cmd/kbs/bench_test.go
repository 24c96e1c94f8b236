package main

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	kbsv1 "github.com/cml-project/cml/proto/cml/kbs/v1"
)

// BenchmarkRelease measures whole key releases against a real kbs process
// on loopback: mTLS, simulator quotes with full verification (collateral
// and CRLs, collateral cached after the first call), one audit record per
// release. Each caller has its own connection and does, per release,
// GetChallenge, a quote over the REPORTDATA, ReleaseKey and the HPKE open.
// It reports releases/s and the p50/p99 latency of one release.
//
// scripts/bench-release.sh runs it and prints a table against the targets.
func BenchmarkRelease(b *testing.B) {
	f := newFixture(b)
	p := start(b, nil, f.serveArgs("--metrics-listen", "")...)
	addr := p.addr(b, "grpc")
	ctx := context.Background()
	admin := kbsv1.NewAdminServiceClient(f.dial(b, addr, "admin"))
	if _, err := admin.CreateKey(ctx, &kbsv1.CreateKeyRequest{KeyId: "bench"}); err != nil {
		b.Fatal(err)
	}
	if _, err := admin.PutPolicy(ctx, &kbsv1.PutPolicyRequest{KeyId: "bench", Policy: f.testPolicy()}); err != nil {
		b.Fatal(err)
	}

	for _, callers := range []int{1, 16, 64} {
		b.Run(fmt.Sprintf("callers=%d", callers), func(b *testing.B) {
			clients := make([]kbsv1.KeyBrokerServiceClient, callers)
			for i := range clients {
				clients[i] = kbsv1.NewKeyBrokerServiceClient(f.dial(b, addr, "loader"))
				// Connect and warm up outside the measurement.
				if _, err := f.release(ctx, clients[i], "bench"); err != nil {
					b.Fatal(err)
				}
			}
			var (
				next      atomic.Int64
				mu        sync.Mutex
				latencies = make([]time.Duration, 0, b.N)
				wg        sync.WaitGroup
				failed    atomic.Value
			)
			b.ResetTimer()
			t0 := time.Now()
			for _, kb := range clients {
				wg.Go(func() {
					var mine []time.Duration
					for next.Add(1) <= int64(b.N) {
						s := time.Now()
						dek, err := f.release(ctx, kb, "bench")
						if err != nil {
							failed.Store(err)
							return
						}
						clear(dek)
						mine = append(mine, time.Since(s))
					}
					mu.Lock()
					latencies = append(latencies, mine...)
					mu.Unlock()
				})
			}
			wg.Wait()
			elapsed := time.Since(t0)
			b.StopTimer()
			if err, _ := failed.Load().(error); err != nil {
				b.Fatal(err)
			}
			slices.Sort(latencies)
			b.ReportMetric(float64(len(latencies))/elapsed.Seconds(), "releases/s")
			b.ReportMetric(ms(percentile(latencies, 0.50)), "p50-ms")
			b.ReportMetric(ms(percentile(latencies, 0.99)), "p99-ms")
		})
	}
}

// percentile returns the q-quantile of sorted durations (nearest rank).
func percentile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(sorted)) + 0.5)
	return sorted[min(max(i-1, 0), len(sorted)-1)]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func TestPercentile(t *testing.T) {
	var d []time.Duration
	for i := 1; i <= 100; i++ {
		d = append(d, time.Duration(i))
	}
	if percentile(d, 0.5) != 50 || percentile(d, 0.99) != 99 || percentile(d[:1], 0.99) != 1 || percentile(nil, 0.5) != 0 {
		t.Errorf("p50 %d p99 %d", percentile(d, 0.5), percentile(d, 0.99))
	}
}
