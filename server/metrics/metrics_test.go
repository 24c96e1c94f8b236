package metrics

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cml-project/cml/server/store"
	"github.com/cml-project/cml/server/store/storetest"
)

// family is one parsed metric family.
type family struct {
	typ     string
	help    string
	samples []sample
}

type sample struct {
	name   string // full sample name (with _bucket, _sum, _count)
	labels map[string]string
	value  float64
}

var (
	metricName = regexp.MustCompile(`^[a-zA-Z_:][a-zA-Z0-9_:]*$`)
	labelName  = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]*$`)
)

// parseExposition parses the text format strictly: every sample belongs to
// the family declared by the HELP and TYPE lines just before it, families
// are not repeated, label values are well escaped, and histograms are
// consistent (cumulative buckets, +Inf bucket equal to _count).
func parseExposition(text string) (map[string]*family, error) {
	if !utf8.ValidString(text) {
		return nil, errors.New("not UTF-8")
	}
	if text != "" && !strings.HasSuffix(text, "\n") {
		return nil, errors.New("no final newline")
	}
	fams := map[string]*family{}
	var cur string
	for n, line := range strings.Split(strings.TrimSuffix(text, "\n"), "\n") {
		n++
		switch {
		case strings.HasPrefix(line, "# HELP "):
			name, help, ok := strings.Cut(line[len("# HELP "):], " ")
			if !ok || !metricName.MatchString(name) {
				return nil, fmt.Errorf("line %d: bad HELP", n)
			}
			if _, dup := fams[name]; dup {
				return nil, fmt.Errorf("line %d: family %s repeated", n, name)
			}
			h, err := unescape(help, false)
			if err != nil {
				return nil, fmt.Errorf("line %d: %v", n, err)
			}
			fams[name] = &family{help: h}
			cur = name
		case strings.HasPrefix(line, "# TYPE "):
			name, typ, ok := strings.Cut(line[len("# TYPE "):], " ")
			if !ok || name != cur || fams[name].typ != "" {
				return nil, fmt.Errorf("line %d: TYPE not right after HELP of the same family", n)
			}
			switch typ {
			case "counter", "gauge", "histogram":
			default:
				return nil, fmt.Errorf("line %d: unknown type %q", n, typ)
			}
			fams[name].typ = typ
		case line == "" || strings.HasPrefix(line, "#"):
			return nil, fmt.Errorf("line %d: unexpected %q", n, line)
		default:
			s, err := parseSample(line)
			if err != nil {
				return nil, fmt.Errorf("line %d: %v", n, err)
			}
			f := fams[cur]
			if f == nil || f.typ == "" {
				return nil, fmt.Errorf("line %d: sample before HELP/TYPE", n)
			}
			want := []string{cur}
			if f.typ == "histogram" {
				want = []string{cur + "_bucket", cur + "_sum", cur + "_count"}
			}
			if !contains(want, s.name) {
				return nil, fmt.Errorf("line %d: sample %s in family %s", n, s.name, cur)
			}
			if f.typ == "counter" && (s.value < 0 || math.IsNaN(s.value)) {
				return nil, fmt.Errorf("line %d: negative counter", n)
			}
			f.samples = append(f.samples, s)
		}
	}
	for name, f := range fams {
		if f.typ == "" {
			return nil, fmt.Errorf("family %s has no TYPE", name)
		}
		if f.typ == "histogram" {
			if err := checkHistogram(name, f); err != nil {
				return nil, err
			}
		}
	}
	return fams, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func parseSample(line string) (sample, error) {
	s := sample{labels: map[string]string{}}
	i := strings.IndexAny(line, "{ ")
	if i < 0 {
		return s, errors.New("no value")
	}
	s.name = line[:i]
	if !metricName.MatchString(s.name) {
		return s, fmt.Errorf("bad metric name %q", s.name)
	}
	rest := line[i:]
	if rest[0] == '{' {
		rest = rest[1:]
		for {
			if strings.HasPrefix(rest, "}") {
				rest = rest[1:]
				break
			}
			eq := strings.Index(rest, `="`)
			if eq < 0 || !labelName.MatchString(rest[:eq]) {
				return s, errors.New("bad label name")
			}
			name := rest[:eq]
			rest = rest[eq+2:]
			// Find the closing quote, skipping escaped characters.
			end := -1
			for j := 0; j < len(rest); j++ {
				if rest[j] == '\\' {
					j++
					continue
				}
				if rest[j] == '"' {
					end = j
					break
				}
			}
			if end < 0 {
				return s, errors.New("unterminated label value")
			}
			v, err := unescape(rest[:end], true)
			if err != nil {
				return s, err
			}
			if _, dup := s.labels[name]; dup {
				return s, fmt.Errorf("label %s repeated", name)
			}
			s.labels[name] = v
			rest = rest[end+1:]
			if strings.HasPrefix(rest, ",") {
				rest = rest[1:]
			} else if !strings.HasPrefix(rest, "}") {
				return s, errors.New("expected , or } after a label")
			}
		}
	}
	v, ok := strings.CutPrefix(rest, " ")
	if !ok {
		return s, errors.New("no space before the value")
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil && v != "+Inf" {
		return s, fmt.Errorf("bad value %q", v)
	}
	s.value = f
	return s, nil
}

// unescape undoes the text format's escapes; " is escaped only in label
// values.
func unescape(s string, label bool) (string, error) {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '\n' || (label && c == '"') {
			return "", fmt.Errorf("unescaped %q", c)
		}
		if c != '\\' {
			b.WriteByte(c)
			continue
		}
		i++
		if i == len(s) {
			return "", errors.New("dangling backslash")
		}
		switch s[i] {
		case '\\':
			b.WriteByte('\\')
		case 'n':
			b.WriteByte('\n')
		case '"':
			if !label {
				return "", errors.New(`\" in HELP`)
			}
			b.WriteByte('"')
		default:
			return "", fmt.Errorf("unknown escape \\%c", s[i])
		}
	}
	return b.String(), nil
}

func checkHistogram(name string, f *family) error {
	var last, inf, count float64 = -1, -1, -1
	lastLe := math.Inf(-1)
	for _, s := range f.samples {
		switch s.name {
		case name + "_bucket":
			le, err := strconv.ParseFloat(s.labels["le"], 64)
			if err != nil || le <= lastLe {
				return fmt.Errorf("%s: le %q not ascending", name, s.labels["le"])
			}
			if s.value < last {
				return fmt.Errorf("%s: buckets not cumulative", name)
			}
			lastLe, last = le, s.value
			if math.IsInf(le, 1) {
				inf = s.value
			}
		case name + "_count":
			count = s.value
		}
	}
	if inf < 0 || inf != count {
		return fmt.Errorf("%s: +Inf bucket %v != count %v", name, inf, count)
	}
	return nil
}

func newMetrics(t testing.TB, opts Options) *Metrics {
	t.Helper()
	m, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func scrape(t testing.TB, m *Metrics) (string, map[string]*family) {
	t.Helper()
	var sb strings.Builder
	if err := m.Write(context.Background(), &sb); err != nil {
		t.Fatal(err)
	}
	fams, err := parseExposition(sb.String())
	if err != nil {
		t.Fatalf("exposition does not parse: %v\n%s", err, sb.String())
	}
	return sb.String(), fams
}

func value(t testing.TB, f *family, name string, labels map[string]string) float64 {
	t.Helper()
	if f == nil {
		t.Fatalf("family of %s missing", name)
	}
next:
	for _, s := range f.samples {
		if s.name != name || len(s.labels) != len(labels) {
			continue
		}
		for k, v := range labels {
			if s.labels[k] != v {
				continue next
			}
		}
		return s.value
	}
	t.Fatalf("no sample %s%v", name, labels)
	return 0
}

func TestExposition(t *testing.T) {
	st := storetest.Open(t)
	ctx := context.Background()
	for _, id := range []string{"a", "b", "c", "d"} {
		if _, err := st.CreateKey(ctx, id, store.KeyOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := st.DisableKey(ctx, "b"); err != nil {
		t.Fatal(err)
	}
	if _, err := st.DestroyKey(ctx, "c"); err != nil {
		t.Fatal(err)
	}
	m := newMetrics(t, Options{Keys: st, Buckets: []float64{0.001, 0.01, 0.1}})

	m.Request("/cml.kbs.v1.KeyBrokerService/ReleaseKey", "OK")
	m.Request("/cml.kbs.v1.KeyBrokerService/ReleaseKey", "OK")
	m.Request("/cml.kbs.v1.KeyBrokerService/ReleaseKey", "PermissionDenied")
	m.ReleaseDecision("allow", "ok")
	m.ReleaseDecision("deny", "mrtd_not_allowed")
	m.ReleaseDecision("deny", "mrtd_not_allowed")
	for _, d := range []time.Duration{500 * time.Microsecond, time.Millisecond, 5 * time.Millisecond, 50 * time.Millisecond, 2 * time.Second, -time.Second} {
		m.QuoteVerified(d)
	}

	text, fams := scrape(t, m)
	rk := "/cml.kbs.v1.KeyBrokerService/ReleaseKey"
	checks := []struct {
		fam, name string
		labels    map[string]string
		want      float64
	}{
		{"kbs_requests_total", "kbs_requests_total", map[string]string{"method": rk, "code": "OK"}, 2},
		{"kbs_requests_total", "kbs_requests_total", map[string]string{"method": rk, "code": "PermissionDenied"}, 1},
		{"kbs_release_decisions_total", "kbs_release_decisions_total", map[string]string{"decision": "allow", "reason": "ok"}, 1},
		{"kbs_release_decisions_total", "kbs_release_decisions_total", map[string]string{"decision": "deny", "reason": "mrtd_not_allowed"}, 2},
		// Bounds are inclusive (le): 1 ms falls in the 0.001 bucket, and
		// the negative duration counts as 0.
		{"kbs_quote_verification_seconds", "kbs_quote_verification_seconds_bucket", map[string]string{"le": "0.001"}, 3},
		{"kbs_quote_verification_seconds", "kbs_quote_verification_seconds_bucket", map[string]string{"le": "0.01"}, 4},
		{"kbs_quote_verification_seconds", "kbs_quote_verification_seconds_bucket", map[string]string{"le": "0.1"}, 5},
		{"kbs_quote_verification_seconds", "kbs_quote_verification_seconds_bucket", map[string]string{"le": "+Inf"}, 6},
		{"kbs_quote_verification_seconds", "kbs_quote_verification_seconds_count", map[string]string{}, 6},
		{"kbs_keys", "kbs_keys", map[string]string{"state": "enabled"}, 2},
		{"kbs_keys", "kbs_keys", map[string]string{"state": "disabled"}, 1},
		{"kbs_keys", "kbs_keys", map[string]string{"state": "destroyed"}, 1},
	}
	for _, c := range checks {
		if got := value(t, fams[c.fam], c.name, c.labels); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	sum := value(t, fams["kbs_quote_verification_seconds"], "kbs_quote_verification_seconds_sum", map[string]string{})
	if want := 0.0005 + 0.001 + 0.005 + 0.05 + 2; math.Abs(sum-want) > 1e-9 {
		t.Errorf("sum = %v, want %v", sum, want)
	}
	for name, typ := range map[string]string{
		"kbs_requests_total": "counter", "kbs_release_decisions_total": "counter",
		"kbs_quote_verification_seconds": "histogram", "kbs_keys": "gauge",
	} {
		if fams[name].typ != typ || fams[name].help == "" {
			t.Errorf("%s: type %q help %q", name, fams[name].typ, fams[name].help)
		}
	}
	// Deterministic order: a second scrape is identical.
	if again, _ := scrape(t, m); again != text {
		t.Errorf("scrapes differ:\n%s\n---\n%s", text, again)
	}
}

func TestEmptyFamiliesStillDeclared(t *testing.T) {
	_, fams := scrape(t, newMetrics(t, Options{}))
	for _, name := range []string{"kbs_requests_total", "kbs_release_decisions_total", "kbs_quote_verification_seconds"} {
		if fams[name] == nil {
			t.Errorf("%s not declared", name)
		}
	}
	if fams["kbs_keys"] != nil {
		t.Error("kbs_keys written without a key lister")
	}
}

type failingLister struct{}

func (failingLister) ListKeys(context.Context, string, int) ([]store.Key, error) {
	return nil, errors.New("store: closed")
}

func TestKeyCountFailureOmitsGauge(t *testing.T) {
	_, fams := scrape(t, newMetrics(t, Options{Keys: failingLister{}}))
	if fams["kbs_keys"] != nil {
		t.Error("kbs_keys written although counting failed")
	}
	if fams["kbs_requests_total"] == nil {
		t.Error("other metrics missing")
	}
}

// pagedLister returns n keys in pages, like the store.
type pagedLister struct{ n int }

func (p pagedLister) ListKeys(_ context.Context, after string, limit int) ([]store.Key, error) {
	start := 0
	if after != "" {
		i, err := strconv.Atoi(after)
		if err != nil {
			return nil, err
		}
		start = i + 1
	}
	var out []store.Key
	for i := start; i < p.n && len(out) < limit; i++ {
		out = append(out, store.Key{ID: fmt.Sprintf("%06d", i), State: store.StateEnabled})
	}
	return out, nil
}

func TestKeyCountPages(t *testing.T) {
	for _, n := range []int{0, 1, store.MaxListLimit, store.MaxListLimit + 1, 2*store.MaxListLimit + 7} {
		_, fams := scrape(t, newMetrics(t, Options{Keys: pagedLister{n}}))
		if got := value(t, fams["kbs_keys"], "kbs_keys", map[string]string{"state": "enabled"}); got != float64(n) {
			t.Errorf("n=%d: kbs_keys = %v", n, got)
		}
	}
}

func TestEscaping(t *testing.T) {
	m := newMetrics(t, Options{})
	weird := "a\"b\\c\nd\xffe"
	m.ReleaseDecision("deny", weird)
	_, fams := scrape(t, m)
	want := strings.ToValidUTF8(weird, "\uFFFD")
	if got := value(t, fams["kbs_release_decisions_total"], "kbs_release_decisions_total", map[string]string{"decision": "deny", "reason": want}); got != 1 {
		t.Errorf("got %v", got)
	}
}

func TestSeriesBound(t *testing.T) {
	m := newMetrics(t, Options{})
	for i := range MaxSeries + 50 {
		m.Request(fmt.Sprintf("/m/%d", i), "OK")
	}
	m.Request("/m/0", "OK") // an existing series still counts as itself
	_, fams := scrape(t, m)
	f := fams["kbs_requests_total"]
	if len(f.samples) != MaxSeries+1 {
		t.Errorf("%d series, want %d", len(f.samples), MaxSeries+1)
	}
	if got := value(t, f, "kbs_requests_total", map[string]string{"method": Overflow, "code": Overflow}); got != 50 {
		t.Errorf("overflow = %v, want 50", got)
	}
	if got := value(t, f, "kbs_requests_total", map[string]string{"method": "/m/0", "code": "OK"}); got != 2 {
		t.Errorf("/m/0 = %v, want 2", got)
	}
}

func TestBadBuckets(t *testing.T) {
	for _, b := range [][]float64{{1, 1}, {2, 1}, {math.NaN()}, {math.Inf(1)}} {
		if _, err := New(Options{Buckets: b}); err == nil {
			t.Errorf("buckets %v accepted", b)
		}
	}
}

func TestInterceptor(t *testing.T) {
	m := newMetrics(t, Options{})
	icpt := m.UnaryServerInterceptor()
	info := &grpc.UnaryServerInfo{FullMethod: "/cml.kbs.v1.AdminService/CreateKey"}
	ok := func(context.Context, any) (any, error) { return "resp", nil }
	denied := func(context.Context, any) (any, error) { return nil, status.Error(codes.PermissionDenied, "no") }
	plain := func(context.Context, any) (any, error) { return nil, errors.New("boom") }
	if resp, err := icpt(context.Background(), nil, info, ok); resp != "resp" || err != nil {
		t.Fatalf("interceptor changed the result: %v %v", resp, err)
	}
	if _, err := icpt(context.Background(), nil, info, denied); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("interceptor changed the error: %v", err)
	}
	icpt(context.Background(), nil, info, plain)
	_, fams := scrape(t, m)
	f := fams["kbs_requests_total"]
	for code, want := range map[string]float64{"OK": 1, "PermissionDenied": 1, "Unknown": 1} {
		if got := value(t, f, "kbs_requests_total", map[string]string{"method": info.FullMethod, "code": code}); got != want {
			t.Errorf("%s = %v", code, got)
		}
	}
}

func TestHTTP(t *testing.T) {
	m := newMetrics(t, Options{})
	m.ReleaseDecision("allow", "ok")
	srv := httptest.NewServer(m)
	defer srv.Close()

	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != ContentType {
		t.Fatalf("status %d, content type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	if _, err := parseExposition(string(body)); err != nil {
		t.Fatal(err)
	}

	resp, err = http.Post(srv.URL, "text/plain", strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST: status %d", resp.StatusCode)
	}
}

func TestConcurrent(t *testing.T) {
	m := newMetrics(t, Options{})
	var wg sync.WaitGroup
	const workers, each = 8, 500
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				m.Request("/x", "OK")
				m.ReleaseDecision("deny", fmt.Sprintf("r%d", (w+i)%3))
				m.QuoteVerified(time.Duration(i) * time.Microsecond)
				if i%100 == 0 {
					m.Write(context.Background(), io.Discard)
				}
			}
		})
	}
	wg.Wait()
	_, fams := scrape(t, m)
	if got := value(t, fams["kbs_requests_total"], "kbs_requests_total", map[string]string{"method": "/x", "code": "OK"}); got != workers*each {
		t.Errorf("requests = %v", got)
	}
	if got := value(t, fams["kbs_quote_verification_seconds"], "kbs_quote_verification_seconds_count", map[string]string{}); got != workers*each {
		t.Errorf("count = %v", got)
	}
}

// FuzzLabelValues checks that any label values, written and parsed back,
// give a valid exposition and the same values (invalid UTF-8 replaced).
func FuzzLabelValues(f *testing.F) {
	f.Add("deny", "mrtd_not_allowed")
	f.Add("a\"b", "c\\n\n")
	f.Add("\xff\xfe", "}{,=\" ")
	f.Fuzz(func(t *testing.T, a, b string) {
		m := newMetrics(t, Options{})
		m.ReleaseDecision(a, b)
		m.Request(b, a)
		_, fams := scrape(t, m)
		wa, wb := strings.ToValidUTF8(a, "\uFFFD"), strings.ToValidUTF8(b, "\uFFFD")
		if got := value(t, fams["kbs_release_decisions_total"], "kbs_release_decisions_total", map[string]string{"decision": wa, "reason": wb}); got != 1 {
			t.Errorf("decision count %v", got)
		}
		if got := value(t, fams["kbs_requests_total"], "kbs_requests_total", map[string]string{"method": wb, "code": wa}); got != 1 {
			t.Errorf("request count %v", got)
		}
	})
}
