package store

import (
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkAuditAppend measures durable audit appends (one fsync per commit)
// from 1 and 16 goroutines; with group commit the 16 share commits.
func BenchmarkAuditAppend(b *testing.B) {
	for _, goroutines := range []int{1, 16} {
		b.Run(fmt.Sprintf("goroutines=%d", goroutines), func(b *testing.B) {
			s, err := Create(ctx, filepath.Join(b.TempDir(), DBFileName), Options{KEK: testKEK(b, 1), Now: time.Now})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			en := entry("bench-request")
			var next atomic.Int64
			var wg sync.WaitGroup
			b.ResetTimer()
			for range goroutines {
				wg.Go(func() {
					for next.Add(1) <= int64(b.N) {
						if _, err := s.AppendAudit(ctx, en); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "appends/s")
		})
	}
}
