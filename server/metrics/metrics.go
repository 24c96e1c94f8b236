package metrics

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	"github.com/cml-project/cml/server/store"
)

// MaxSeries bounds the label sets one family keeps; further label sets are
// counted under "other" so a bug upstream cannot grow memory without bound.
const MaxSeries = 1000

// Overflow is the label value that replaces every label of a series beyond
// MaxSeries.
const Overflow = "other"

// DefaultBuckets are the upper bounds (seconds) of the quote verification
// histogram: a cached verification takes about a millisecond, a collateral
// fetch up to seconds.
var DefaultBuckets = []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}

// ContentType is the media type of the text exposition format.
const ContentType = "text/plain; version=0.0.4; charset=utf-8"

// KeyLister is the part of the keystore the kbs_keys gauge reads.
// *store.Store implements it.
type KeyLister interface {
	ListKeys(ctx context.Context, after string, limit int) ([]store.Key, error)
}

var _ KeyLister = (*store.Store)(nil)

// Options configure New.
type Options struct {
	// Keys is counted at every scrape for kbs_keys; nil omits the gauge.
	Keys KeyLister
	// Buckets of kbs_quote_verification_seconds, ascending; nil means
	// DefaultBuckets.
	Buckets []float64
	// Logger receives scrape errors; nil discards them.
	Logger *slog.Logger
}

// Metrics holds the key broker's metrics. It is safe for concurrent use;
// the zero value is not usable, call New.
type Metrics struct {
	keys KeyLister
	log  *slog.Logger

	mu        sync.Mutex
	requests  counterVec // method, code
	decisions counterVec // decision, reason
	quote     histogram
}

// New returns empty metrics.
func New(opts Options) (*Metrics, error) {
	b := opts.Buckets
	if b == nil {
		b = DefaultBuckets
	}
	for i, v := range b {
		if math.IsNaN(v) || math.IsInf(v, 0) || (i > 0 && v <= b[i-1]) {
			return nil, fmt.Errorf("metrics: buckets must be finite and strictly ascending, got %v", b)
		}
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Metrics{
		keys:      opts.Keys,
		log:       log,
		requests:  counterVec{},
		decisions: counterVec{},
		quote:     histogram{bounds: slices.Clone(b), counts: make([]uint64, len(b))},
	}, nil
}

// Request counts one completed gRPC call (kbs_requests_total).
func (m *Metrics) Request(method, code string) {
	m.mu.Lock()
	m.requests.inc(method, code)
	m.mu.Unlock()
}

// ReleaseDecision counts one ReleaseKey outcome
// (kbs_release_decisions_total): decision "allow" or "deny", reason a stable
// reason code ("ok" for an allow).
func (m *Metrics) ReleaseDecision(decision, reason string) {
	m.mu.Lock()
	m.decisions.inc(decision, reason)
	m.mu.Unlock()
}

// QuoteVerified records how long one quote verification took
// (kbs_quote_verification_seconds), whatever its outcome.
func (m *Metrics) QuoteVerified(d time.Duration) {
	s := d.Seconds()
	if s < 0 || math.IsNaN(s) {
		s = 0
	}
	m.mu.Lock()
	m.quote.observe(s)
	m.mu.Unlock()
}

// UnaryServerInterceptor counts every unary call by full method name and
// status code.
func (m *Metrics) UnaryServerInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		resp, err := handler(ctx, req)
		m.Request(info.FullMethod, status.Code(err).String())
		return resp, err
	}
}

// ServeHTTP serves the exposition for GET and HEAD.
func (m *Metrics) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "metrics: method not allowed", http.StatusMethodNotAllowed)
		return
	}
	var sb strings.Builder
	if err := m.Write(r.Context(), &sb); err != nil {
		http.Error(w, "metrics: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", ContentType)
	if r.Method == http.MethodGet {
		io.WriteString(w, sb.String())
	}
}

// Write writes every metric in the text exposition format. A failure to
// count keys is logged and omits kbs_keys; the other metrics are still
// written.
func (m *Metrics) Write(ctx context.Context, w io.Writer) error {
	var keys map[store.State]int
	if m.keys != nil {
		var err error
		if keys, err = countKeys(ctx, m.keys); err != nil {
			m.log.WarnContext(ctx, "metrics: counting keys failed; kbs_keys omitted", "error", err)
			keys = nil
		}
	}

	bw := bufio.NewWriter(w)
	m.mu.Lock()
	writeCounters(bw, "kbs_requests_total", "gRPC calls completed, by full method name and status code.", [2]string{"method", "code"}, m.requests)
	writeCounters(bw, "kbs_release_decisions_total", "Key release decisions, by decision (allow, deny) and reason code (ok for allow).", [2]string{"decision", "reason"}, m.decisions)
	m.quote.write(bw, "kbs_quote_verification_seconds", "Time to verify one TDX quote (signatures, certificate chain, collateral, CRLs), whatever the outcome.")
	m.mu.Unlock()
	if keys != nil {
		writeHeader(bw, "kbs_keys", "Keys in the keystore at scrape time, by state.", "gauge")
		for _, s := range []store.State{store.StateEnabled, store.StateDisabled, store.StateDestroyed} {
			fmt.Fprintf(bw, "kbs_keys{state=%s} %d\n", quote(string(s)), keys[s])
		}
	}
	return bw.Flush()
}

// countKeys pages through the keystore and counts keys by state.
func countKeys(ctx context.Context, l KeyLister) (map[store.State]int, error) {
	counts := map[store.State]int{}
	after := ""
	for {
		page, err := l.ListKeys(ctx, after, store.MaxListLimit)
		if err != nil {
			return nil, err
		}
		for _, k := range page {
			counts[k.State]++
		}
		if len(page) < store.MaxListLimit {
			return counts, nil
		}
		after = page[len(page)-1].ID
	}
}

// counterVec is a counter family with two labels.
type counterVec map[[2]string]uint64

func (c counterVec) inc(a, b string) {
	k := [2]string{a, b}
	if _, ok := c[k]; !ok && len(c) >= MaxSeries {
		k = [2]string{Overflow, Overflow}
	}
	c[k]++
}

func writeCounters(w io.Writer, name, help string, labels [2]string, c counterVec) {
	writeHeader(w, name, help, "counter")
	keys := make([][2]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(x, y [2]string) int {
		if r := strings.Compare(x[0], y[0]); r != 0 {
			return r
		}
		return strings.Compare(x[1], y[1])
	})
	for _, k := range keys {
		fmt.Fprintf(w, "%s{%s=%s,%s=%s} %d\n", name, labels[0], quote(k[0]), labels[1], quote(k[1]), c[k])
	}
}

// histogram keeps non-cumulative bucket counts; write accumulates them.
type histogram struct {
	bounds []float64
	counts []uint64 // counts[i]: observations in (bounds[i-1], bounds[i]]
	inf    uint64   // observations above the last bound
	sum    float64
	count  uint64
}

func (h *histogram) observe(v float64) {
	i, _ := slices.BinarySearch(h.bounds, v) // first bound >= v
	if i < len(h.bounds) {
		h.counts[i]++
	} else {
		h.inf++
	}
	h.sum += v
	h.count++
}

func (h *histogram) write(w io.Writer, name, help string) {
	writeHeader(w, name, help, "histogram")
	var cum uint64
	for i, b := range h.bounds {
		cum += h.counts[i]
		fmt.Fprintf(w, "%s_bucket{le=%s} %d\n", name, quote(formatFloat(b)), cum)
	}
	fmt.Fprintf(w, "%s_bucket{le=\"+Inf\"} %d\n", name, cum+h.inf)
	fmt.Fprintf(w, "%s_sum %s\n", name, formatFloat(h.sum))
	fmt.Fprintf(w, "%s_count %d\n", name, h.count)
}

func writeHeader(w io.Writer, name, help, typ string) {
	fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s %s\n", name, helpEscaper.Replace(help), name, typ)
}

func formatFloat(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }

// The text format escapes \ and newline in HELP, and also " in label values.
var (
	helpEscaper  = strings.NewReplacer(`\`, `\\`, "\n", `\n`)
	labelEscaper = strings.NewReplacer(`\`, `\\`, "\n", `\n`, `"`, `\"`)
)

// quote returns a label value in double quotes, escaped. Invalid UTF-8 is
// replaced so the exposition stays valid UTF-8.
func quote(v string) string {
	return `"` + labelEscaper.Replace(strings.ToValidUTF8(v, "\uFFFD")) + `"`
}
