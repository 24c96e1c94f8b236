package verifier

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/cml-project/cml/tdx/collateral"
	"github.com/cml-project/cml/tdx/tdxsim"
)

// TestConcurrentVerify runs 8 goroutines verifying accepted and rejected
// quotes through one Verifier and one collateral Getter (run with -race).
func TestConcurrentVerify(t *testing.T) {
	s := newSim(t, tdxsim.Options{})
	dir := t.TempDir()
	if err := s.WriteCollateral(dir); err != nil {
		t.Fatal(err)
	}
	at := simEpoch.Add(time.Hour)
	g, err := collateral.New(collateral.Config{Dir: dir, Offline: true, Now: fixedClock(at)})
	if err != nil {
		t.Fatal(err)
	}
	v := simVerifier(t, s, g, at, CheckFull)
	good := quote(t, s, [64]byte{1}, s.DefaultTD())
	bad := flip(good, offReportData)
	debug := s.DefaultTD()
	debug.Debug = true
	dbg := quote(t, s, [64]byte{2}, debug)

	const workers, rounds = 8, 6
	var wg sync.WaitGroup
	errs := make(chan string, workers*rounds*3)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < rounds; i++ {
				c, err := v.Verify(context.Background(), good)
				if err != nil || c.ReportData[0] != 1 || c.Debug {
					errs <- "good quote: unexpected result"
				}
				if _, err := v.Verify(context.Background(), bad); ReasonOf(err) != ReasonQuoteSignatureInvalid {
					errs <- "tampered quote: reason " + string(ReasonOf(err))
				}
				c, err = v.Verify(context.Background(), dbg)
				if err != nil || !c.Debug || c.ReportData[0] != 2 {
					errs <- "debug quote: unexpected result"
				}
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}
