package quote

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"

	"github.com/google/go-configfs-tsm/configfs/configfsi"
	"github.com/google/go-configfs-tsm/configfs/linuxtsm"
	"github.com/google/go-configfs-tsm/report"

	"github.com/cml-project/cml/tdx/tdxsim"
)

// Provider returns a TDX quote whose REPORTDATA is reportData.
type Provider interface {
	GetQuote(ctx context.Context, reportData [64]byte) ([]byte, error)
}

var (
	_ Provider = (*ConfigFS)(nil)
	_ Provider = (*Simulated)(nil)
)

// tdxProvider is what configfs-tsm reports for TDX guests.
const tdxProvider = "tdx_guest"

// generationRetries bounds retries when another process wrote to the same
// report entry between our write and read (go-configfs-tsm detects this).
const generationRetries = 3

// ConfigFS gets quotes through the kernel's configfs-tsm interface.
type ConfigFS struct {
	client configfsi.Client
}

// NewConfigFS opens /sys/kernel/config/tsm/report (Linux ≥ 6.7 in a TD).
func NewConfigFS() (*ConfigFS, error) {
	c, err := linuxtsm.MakeClient()
	if err != nil {
		return nil, fmt.Errorf("quote: configfs-tsm unavailable (needs Linux 6.7 or later inside a TDX guest, and configfs mounted): %w", err)
	}
	return &ConfigFS{client: c}, nil
}

// NewConfigFSWithClient uses the given configfs client (tests use
// go-configfs-tsm's faketsm).
func NewConfigFSWithClient(c configfsi.Client) *ConfigFS { return &ConfigFS{client: c} }

// GetQuote asks the kernel for a quote over reportData. Quote generation
// can take seconds (the host's quoting service signs it); if ctx ends
// first, GetQuote returns and the request is abandoned (its configfs entry
// is still removed when the kernel answers).
func (p *ConfigFS) GetQuote(ctx context.Context, reportData [64]byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("quote: %w", err)
	}
	type result struct {
		resp *report.Response
		err  error
	}
	ch := make(chan result, 1)
	go func() {
		var r result
		for i := 0; i < generationRetries; i++ {
			r.resp, r.err = report.Get(p.client, &report.Request{InBlob: reportData[:]})
			if report.GetGenerationErr(r.err) == nil {
				break
			}
		}
		ch <- r
	}()
	var r result
	select {
	case r = <-ch:
	case <-ctx.Done():
		return nil, fmt.Errorf("quote: configfs-tsm: %w", ctx.Err())
	}
	if r.err != nil {
		return nil, fmt.Errorf("quote: configfs-tsm: %w", r.err)
	}
	if prov := strings.TrimSpace(r.resp.Provider); prov != tdxProvider {
		return nil, fmt.Errorf("quote: configfs-tsm provider is %q, want %q (not a TDX guest?)", prov, tdxProvider)
	}
	q := r.resp.OutBlob
	if len(q) == 0 {
		return nil, errors.New("quote: configfs-tsm returned an empty quote (is the host's quote generation service running?)")
	}
	if err := checkHeader(q); err != nil {
		return nil, err
	}
	return q, nil
}

// checkHeader rejects output that is not a TDX quote v4: the verifier
// would too, but a clear error here names the cause on the TD's side.
func checkHeader(q []byte) error {
	if len(q) < 8 {
		return fmt.Errorf("quote: configfs-tsm returned %d bytes, too short for a quote", len(q))
	}
	if v, tee := binary.LittleEndian.Uint16(q), binary.LittleEndian.Uint32(q[4:]); v != 4 || tee != 0x81 {
		return fmt.Errorf("quote: configfs-tsm returned version %d TEE type %#x, want a TDX (0x81) quote version 4", v, tee)
	}
	return nil
}

// Simulated produces quotes with a TDX simulator. Development and tests
// only: a broker accepts them only if it explicitly trusts the
// simulator's root.
type Simulated struct {
	sim *tdxsim.Simulator
	td  tdxsim.TDParams
}

// NewSimulated returns a provider quoting as the TD td on sim.
func NewSimulated(sim *tdxsim.Simulator, td tdxsim.TDParams) *Simulated {
	return &Simulated{sim: sim, td: td}
}

// GetQuote returns a simulated quote over reportData.
func (s *Simulated) GetQuote(ctx context.Context, reportData [64]byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("quote: %w", err)
	}
	q, err := s.sim.Quote(reportData, s.td)
	if err != nil {
		return nil, fmt.Errorf("quote: simulated: %w", err)
	}
	return q, nil
}
