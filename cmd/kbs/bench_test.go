package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cml-project/cml/identity/devca"
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
//
// With BENCH_RELEASE_PPROF=1 the kbs process also serves Go profiles
// (--pprof-listen on loopback) and the benchmark logs the address, so a
// CPU profile of the server can be taken while it runs, e.g.
// go tool pprof http://ADDR/debug/pprof/profile?seconds=10.
func BenchmarkRelease(b *testing.B) {
	f := newFixture(b)
	args := f.serveArgs("--metrics-listen", "")
	if os.Getenv("BENCH_RELEASE_PPROF") == "1" {
		args = append(args, "--pprof-listen", "127.0.0.1:0")
	}
	p := start(b, nil, args...)
	addr := p.addr(b, "grpc")
	if os.Getenv("BENCH_RELEASE_PPROF") == "1" {
		fmt.Fprintf(os.Stderr, "kbs pprof: http://%s/debug/pprof/\n", p.addr(b, "pprof"))
	}
	// kbs still logs every RPC; the benchmark only stops parsing the lines.
	p.discardLogs()
	ctx := context.Background()
	admin := kbsv1.NewAdminServiceClient(f.dial(b, addr, "admin"))
	if _, err := admin.CreateKey(ctx, &kbsv1.CreateKeyRequest{KeyId: "bench"}); err != nil {
		b.Fatal(err)
	}
	// Every caller is its own workload, spiffe://example.org/loader/N, as
	// separate pods would be: the broker bounds outstanding challenges per
	// SPIFFE ID (16 by default).
	const maxCallers = 64
	for i := range maxCallers {
		if _, _, err := devca.AddSVID(f.certs, fmt.Sprintf("loader/%d", i), time.Hour); err != nil {
			b.Fatal(err)
		}
	}
	pol := f.testPolicy()
	pol.SpiffeIds = append(pol.SpiffeIds, f.id("loader").String()+"/*")
	if _, err := admin.PutPolicy(ctx, &kbsv1.PutPolicyRequest{KeyId: "bench", Policy: pol}); err != nil {
		b.Fatal(err)
	}

	for _, callers := range []int{1, 16, maxCallers} {
		b.Run(fmt.Sprintf("callers=%d", callers), func(b *testing.B) {
			clients := make([]kbsv1.KeyBrokerServiceClient, callers)
			for i := range clients {
				clients[i] = kbsv1.NewKeyBrokerServiceClient(f.dial(b, addr, fmt.Sprintf("loader/%d", i)))
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
			srv0, cli0 := cpuTime(b, p.cmd.Process.Pid), cpuTime(b, os.Getpid())
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
			srv1, cli1 := cpuTime(b, p.cmd.Process.Pid), cpuTime(b, os.Getpid())
			b.StopTimer()
			if err, _ := failed.Load().(error); err != nil {
				b.Fatal(err)
			}
			slices.Sort(latencies)
			b.ReportMetric(float64(len(latencies))/elapsed.Seconds(), "releases/s")
			b.ReportMetric(ms(percentile(latencies, 0.50)), "p50-ms")
			b.ReportMetric(ms(percentile(latencies, 0.99)), "p99-ms")
			// CPU per release, independent of what else runs on the machine.
			b.ReportMetric(ms(srv1-srv0)/float64(len(latencies)), "kbs-cpu-ms/op")
			b.ReportMetric(ms(cli1-cli0)/float64(len(latencies)), "client-cpu-ms/op")
		})
	}
}

// cpuTime returns the user+system CPU time of a process so far, from
// /proc/PID/stat (Linux; fields 14 and 15, in clock ticks of 10 ms).
func cpuTime(b *testing.B, pid int) time.Duration {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Logf("no CPU time for pid %d: %v", pid, err)
		return 0
	}
	// The command name (field 2) is in parentheses and may hold spaces.
	f := strings.Fields(string(raw[bytes.LastIndexByte(raw, ')')+1:]))
	if len(f) < 13 {
		return 0
	}
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * 10 * time.Millisecond
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
