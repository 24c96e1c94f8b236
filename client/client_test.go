package client_test

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cml-project/cml/client"
	"github.com/cml-project/cml/client/clienttest"
	kbsv1 "github.com/cml-project/cml/proto/cml/kbs/v1"
	"github.com/cml-project/cml/server/audit"
	"github.com/cml-project/cml/tdx/quote"
)

// dial connects to b as id with opts on top of the required ones.
func dial(t *testing.T, b *clienttest.Broker, id spiffeid.ID, opts ...client.Option) *client.Client {
	t.Helper()
	opts = append([]client.Option{
		client.WithServerID(b.KBSID),
		client.WithSource(b.Source(t, id)),
		client.WithDialOptions(b.DialOptions()...),
	}, opts...)
	c, err := client.New(context.Background(), b.Addr, opts...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// releaseRecords counts the audit records of the key release service
// (GetChallenge denials included).
func releaseRecords(t *testing.T, b *clienttest.Broker) int {
	t.Helper()
	recs, err := b.Store.ListAudit(context.Background(), audit.Filter{Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, r := range recs {
		if r.Operation == "ReleaseKey" || r.Operation == "GetChallenge" {
			n++
		}
	}
	return n
}

func TestReleaseKey(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts clienttest.Options
	}{
		{"bufconn", clienttest.Options{Bufconn: true}},
		{"loopback", clienttest.Options{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := clienttest.New(t, tc.opts)
			dek := b.ImportKey(t, "llama-3-8b", b.DefaultPolicy())
			c := dial(t, b, b.LoaderID, client.WithTimeout(10*time.Second))
			rk, err := c.ReleaseKey(context.Background(), "llama-3-8b", 0, b.Quoter())
			if err != nil {
				t.Fatalf("ReleaseKey: %v", err)
			}
			if !bytes.Equal(rk.Key, dek) {
				t.Fatal("released key differs from the stored DEK")
			}
			if rk.KeyID != "llama-3-8b" || rk.Version != 1 || rk.Algorithm != client.AlgorithmAES256GCM || rk.PolicyVersion != 1 || rk.RequestID == "" {
				t.Errorf("released key metadata %+v", *rk)
			}
			rk.Zero()
			if !bytes.Equal(rk.Key, make([]byte, 32)) {
				t.Error("Zero left key bytes")
			}
			if strings.Contains(b.Logs.String(), string(dek)) {
				t.Error("the DEK appears in the broker log")
			}
		})
	}
}

func TestReleaseKeyVersions(t *testing.T) {
	b := clienttest.New(t, clienttest.Options{Bufconn: true})
	dek1 := b.ImportKey(t, "m", b.DefaultPolicy())
	v2, dek2 := b.RotateKey(t, "m")
	c := dial(t, b, b.LoaderID)
	ctx := context.Background()
	for _, tc := range []struct {
		ask, want uint32
		dek       []byte
	}{{0, v2, dek2}, {1, 1, dek1}, {v2, v2, dek2}} {
		rk, err := c.ReleaseKey(ctx, "m", tc.ask, b.Quoter())
		if err != nil {
			t.Fatalf("ReleaseKey version %d: %v", tc.ask, err)
		}
		if rk.Version != tc.want || !bytes.Equal(rk.Key, tc.dek) {
			t.Errorf("asked version %d: got version %d, key match %v", tc.ask, rk.Version, bytes.Equal(rk.Key, tc.dek))
		}
	}
	// A version that does not exist is a denial, like an unknown key.
	_, err := c.ReleaseKey(ctx, "m", 9, b.Quoter())
	var d *client.DeniedError
	if !errors.As(err, &d) {
		t.Fatalf("version 9: %v, want a DeniedError", err)
	}
}

func TestDenied(t *testing.T) {
	b := clienttest.New(t, clienttest.Options{})
	b.ImportKey(t, "m", b.DefaultPolicy())
	otherTD := b.Sim.DefaultTD()
	otherTD.MRTD[0] ^= 1
	for _, tc := range []struct {
		name   string
		id     spiffeid.ID
		quoter func() any
		reason string
	}{
		{"spiffe id", clienttest.OtherID, nil, "spiffe_id_not_allowed"},
		{"mrtd", b.LoaderID, func() any { return otherTD }, "mrtd_not_allowed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := releaseRecords(t, b)
			c := dial(t, b, tc.id, client.WithRetry(20*time.Second))
			qp := b.Quoter()
			if tc.quoter != nil {
				qp = simQuoter(b, otherTD)
			}
			start := time.Now()
			_, err := c.ReleaseKey(context.Background(), "m", 0, qp)
			var d *client.DeniedError
			if !errors.As(err, &d) {
				t.Fatalf("ReleaseKey: %v, want a DeniedError", err)
			}
			if d.Reason != tc.reason || len(d.RequestID) == 0 {
				t.Errorf("denied %q request %q, want reason %q and a request id", d.Reason, d.RequestID, tc.reason)
			}
			if status.Code(err) != codes.PermissionDenied {
				t.Errorf("status.Code = %s, want PermissionDenied", status.Code(err))
			}
			if r, id, ok := client.ReasonOf(err); !ok || r != tc.reason || id != d.RequestID {
				t.Errorf("ReasonOf = %q %q %v", r, id, ok)
			}
			if !strings.Contains(err.Error(), tc.reason) || !strings.Contains(err.Error(), d.RequestID) {
				t.Errorf("error text %q lacks the reason or request id", err)
			}
			// Never retried: one audited decision, and no waiting.
			if n := releaseRecords(t, b) - before; n != 1 {
				t.Errorf("%d audited decisions, want 1 (no retry of PermissionDenied)", n)
			}
			if el := time.Since(start); el > 5*time.Second {
				t.Errorf("denial took %s", el)
			}
		})
	}
}

func TestUnknownKeyDenied(t *testing.T) {
	b := clienttest.New(t, clienttest.Options{Bufconn: true})
	c := dial(t, b, b.LoaderID)
	_, err := c.ReleaseKey(context.Background(), "no-such-key", 0, b.Quoter())
	if r, _, ok := client.ReasonOf(err); !ok || status.Code(err) != codes.PermissionDenied {
		t.Fatalf("unknown key: %v (reason %q), want PermissionDenied", err, r)
	}
}

func TestServerIDMismatch(t *testing.T) {
	b := clienttest.New(t, clienttest.Options{})
	b.ImportKey(t, "m", b.DefaultPolicy())
	wrong := spiffeid.RequireFromPath(clienttest.TrustDomain, "/ns/cml-system/sa/not-kbs")
	c, err := client.New(context.Background(), b.Addr,
		client.WithServerID(wrong),
		client.WithSource(b.Source(t, b.LoaderID)),
		client.WithRetry(20*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	_, err = c.ReleaseKey(context.Background(), "m", 0, b.Quoter())
	if !errors.Is(err, client.ErrServerIdentity) {
		t.Fatalf("ReleaseKey against a broker with another ID: %v, want ErrServerIdentity", err)
	}
	if !strings.Contains(err.Error(), clienttest.KBSID.String()) {
		t.Errorf("error %q does not name the ID the broker presented", err)
	}
	if status.Code(err) != codes.Unavailable {
		t.Errorf("status.Code = %s, want Unavailable", status.Code(err))
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Errorf("an impostor was retried for %s", el)
	}
	if n := releaseRecords(t, b); n != 0 {
		t.Errorf("%d releases reached the broker", n)
	}
}

func TestNewRefuses(t *testing.T) {
	b := clienttest.New(t, clienttest.Options{Bufconn: true})
	src := b.Source(t, b.LoaderID)
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		addr string
		opts []client.Option
		want string
	}{
		{"no server id", b.Addr, []client.Option{client.WithSource(src)}, "SPIFFE ID is required"},
		{"trust domain as server id", b.Addr, []client.Option{client.WithSource(src), client.WithServerID(spiffeid.RequireFromString("spiffe://example.org"))}, "names a trust domain"},
		{"no identity", b.Addr, []client.Option{client.WithServerID(b.KBSID)}, "exactly one of"},
		{"two identities", b.Addr, []client.Option{client.WithServerID(b.KBSID), client.WithSource(src), client.WithWorkloadAPI("unix:///nonexistent")}, "exactly one of"},
		{"no address", "", []client.Option{client.WithServerID(b.KBSID), client.WithSource(src)}, "address is empty"},
		{"negative timeout", b.Addr, []client.Option{client.WithServerID(b.KBSID), client.WithSource(src), client.WithTimeout(-1)}, "negative"},
		{"missing svid files", b.Addr, []client.Option{client.WithServerID(b.KBSID), client.WithSVIDFiles("/nonexistent/c.pem", "/nonexistent/k.pem", "/nonexistent/b.pem")}, "nonexistent"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := client.New(ctx, tc.addr, tc.opts...)
			if err == nil {
				c.Close()
				t.Fatal("New succeeded")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q, want it to contain %q", err, tc.want)
			}
		})
	}
	if _, err := client.New(ctx, b.Addr, client.WithSource(src)); !errors.Is(err, client.ErrNoServerID) {
		t.Errorf("without WithServerID: %v, want ErrNoServerID", err)
	}
}

func TestRetryUntilBrokerAppears(t *testing.T) {
	b := clienttest.New(t, clienttest.Options{Deferred: true})
	c := dial(t, b, b.LoaderID, client.WithRetry(30*time.Second), client.WithTimeout(5*time.Second))

	var (
		wg  sync.WaitGroup
		rk  *client.ReleasedKey
		err error
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		rk, err = c.ReleaseKey(context.Background(), "m", 0, b.Quoter())
	}()
	time.Sleep(700 * time.Millisecond) // several refused connections
	b.Serve(t)
	dek := b.ImportKey(t, "m", b.DefaultPolicy())
	wg.Wait()
	if err != nil {
		t.Fatalf("ReleaseKey: %v", err)
	}
	if !bytes.Equal(rk.Key, dek) {
		t.Fatal("released key differs from the DEK")
	}
}

func TestRetryGivesUp(t *testing.T) {
	b := clienttest.New(t, clienttest.Options{Deferred: true}) // never served
	c := dial(t, b, b.LoaderID, client.WithRetry(800*time.Millisecond))
	start := time.Now()
	_, err := c.ReleaseKey(context.Background(), "m", 0, b.Quoter())
	el := time.Since(start)
	var u *client.UnavailableError
	if !errors.As(err, &u) || status.Code(err) != codes.Unavailable {
		t.Fatalf("ReleaseKey with no broker: %v (code %s), want an UnavailableError with code Unavailable", err, status.Code(err))
	}
	if el < 300*time.Millisecond || el > 5*time.Second {
		t.Errorf("gave up after %s, want about 800ms", el)
	}
}

func TestNoRetryWithoutOption(t *testing.T) {
	b := clienttest.New(t, clienttest.Options{Deferred: true})
	c := dial(t, b, b.LoaderID)
	_, err := c.ReleaseKey(context.Background(), "m", 0, b.Quoter())
	var u *client.UnavailableError
	if status.Code(err) != codes.Unavailable || errors.As(err, &u) {
		t.Fatalf("ReleaseKey with no broker and no retry: %v, want a plain Unavailable", err)
	}
}

func TestPostQuantum(t *testing.T) {
	b := clienttest.New(t, clienttest.Options{Bufconn: true})
	p := b.DefaultPolicy()
	p.AllowedKemIds = []kbsv1.HpkeKem{kbsv1.HpkeKem_HPKE_KEM_MLKEM768_X25519}
	dek := b.ImportKey(t, "pq", p)

	rk, err := dial(t, b, b.LoaderID, client.WithPostQuantum()).ReleaseKey(context.Background(), "pq", 0, b.Quoter())
	if err != nil {
		t.Fatalf("post-quantum ReleaseKey: %v", err)
	}
	if !bytes.Equal(rk.Key, dek) {
		t.Fatal("released key differs from the DEK")
	}
	// The policy requires ML-KEM: the classical KEM is refused, which shows
	// the option really changed the KEM.
	_, err = dial(t, b, b.LoaderID).ReleaseKey(context.Background(), "pq", 0, b.Quoter())
	if r, _, _ := client.ReasonOf(err); r != "kem_not_allowed" {
		t.Fatalf("X25519 release under an ML-KEM-only policy: %v, want kem_not_allowed", err)
	}
}

func TestExportKey(t *testing.T) {
	b := clienttest.New(t, clienttest.Options{})
	dek := b.ImportKey(t, "m", nil) // export needs no policy
	for _, pq := range []bool{false, true} {
		var opts []client.Option
		if pq {
			opts = append(opts, client.WithPostQuantum())
		}
		rk, err := dial(t, b, b.AdminID, opts...).ExportKey(context.Background(), "m", 0)
		if err != nil {
			t.Fatalf("ExportKey (post-quantum %v): %v", pq, err)
		}
		if !bytes.Equal(rk.Key, dek) || rk.Version != 1 || rk.PolicyVersion != 0 || rk.RequestID == "" {
			t.Errorf("export (post-quantum %v): key match %v, %+v", pq, bytes.Equal(rk.Key, dek), *rk)
		}
	}
	// Only admins export.
	_, err := dial(t, b, b.LoaderID).ExportKey(context.Background(), "m", 0)
	var d *client.DeniedError
	if !errors.As(err, &d) {
		t.Fatalf("ExportKey as a loader: %v, want a DeniedError", err)
	}
}

func TestAdminThroughClient(t *testing.T) {
	b := clienttest.New(t, clienttest.Options{Bufconn: true})
	ctx := context.Background()
	admin := dial(t, b, b.AdminID, client.WithTimeout(5*time.Second), client.WithRetry(5*time.Second)).Admin()
	if _, err := admin.CreateKey(ctx, &kbsv1.CreateKeyRequest{KeyId: "k"}); err != nil {
		t.Fatalf("CreateKey: %v", err)
	}
	got, err := admin.GetKey(ctx, &kbsv1.GetKeyRequest{KeyId: "k"})
	if err != nil || got.GetKey().GetKeyId() != "k" {
		t.Fatalf("GetKey: %v %v", got, err)
	}
	// A loader is not an admin: the raw admin client reports a DeniedError too.
	_, err = dial(t, b, b.LoaderID).Admin().CreateKey(ctx, &kbsv1.CreateKeyRequest{KeyId: "k2"})
	var d *client.DeniedError
	if !errors.As(err, &d) || status.Code(err) != codes.PermissionDenied || d.Reason == "" {
		t.Fatalf("CreateKey as a loader: %v, want a DeniedError", err)
	}
	// Other codes keep their status and reason.
	_, err = admin.CreateKey(ctx, &kbsv1.CreateKeyRequest{KeyId: "k"})
	if status.Code(err) != codes.AlreadyExists {
		t.Fatalf("CreateKey twice: %v, want AlreadyExists", err)
	}
	if r, id, ok := client.ReasonOf(err); !ok || r == "" || id == "" {
		t.Errorf("ReasonOf(AlreadyExists) = %q %q %v, want the broker's detail", r, id, ok)
	}
}

func TestBadKeyID(t *testing.T) {
	b := clienttest.New(t, clienttest.Options{Bufconn: true})
	c := dial(t, b, b.LoaderID)
	for _, id := range []string{"", "a/b", "ünï", strings.Repeat("a", 129), "a b"} {
		if _, err := c.ReleaseKey(context.Background(), id, 0, b.Quoter()); err == nil || !strings.Contains(err.Error(), "key id") {
			t.Errorf("ReleaseKey(%q): %v, want a key id error", id, err)
		}
		if _, err := c.ExportKey(context.Background(), id, 0); err == nil || !strings.Contains(err.Error(), "key id") {
			t.Errorf("ExportKey(%q): %v, want a key id error", id, err)
		}
	}
	if _, err := c.ReleaseKey(context.Background(), "m", 0, nil); err == nil {
		t.Error("ReleaseKey without a quote provider succeeded")
	}
	if n := releaseRecords(t, b); n != 0 {
		t.Errorf("%d requests reached the broker", n)
	}
}

// gatedQuoter holds its first GetQuote until gate closes, so the release
// that got a challenge keeps it outstanding meanwhile.
type gatedQuoter struct {
	qp    quote.Provider
	gate  chan struct{}
	first atomic.Bool
}

func (g *gatedQuoter) GetQuote(ctx context.Context, rd [64]byte) ([]byte, error) {
	if g.first.CompareAndSwap(false, true) {
		select {
		case <-g.gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return g.qp.GetQuote(ctx, rd)
}

// TestTooManyChallengesRealBroker: two loaders of one SPIFFE ID release at
// once from a broker that allows one outstanding challenge per caller. While
// the first holds its challenge, the second is refused too_many_challenges
// (audited), retries, and both get the key.
func TestTooManyChallengesRealBroker(t *testing.T) {
	b := clienttest.New(t, clienttest.Options{Bufconn: true, MaxChallengesPerCaller: 1})
	dek := b.ImportKey(t, "m", b.DefaultPolicy())
	q := &gatedQuoter{qp: b.Quoter(), gate: make(chan struct{})}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	var (
		wg   sync.WaitGroup
		keys [2]*client.ReleasedKey
		errs [2]error
	)
	for i := range 2 {
		c := dial(t, b, b.LoaderID, client.WithRetry(20*time.Second))
		wg.Go(func() { keys[i], errs[i] = c.ReleaseKey(ctx, "m", 0, q) })
	}
	// Open the gate once the broker has refused a challenge.
	refused := func() bool {
		recs, err := b.Store.ListAudit(ctx, audit.Filter{Limit: 1000})
		if err != nil {
			t.Error(err)
			return true
		}
		for _, r := range recs {
			if r.Operation == "GetChallenge" && slices.Contains(r.Reasons, "too_many_challenges") {
				return true
			}
		}
		return false
	}
	for !refused() && ctx.Err() == nil {
		time.Sleep(10 * time.Millisecond)
	}
	if ctx.Err() != nil {
		t.Error("the broker never refused a challenge")
	}
	close(q.gate)
	wg.Wait()
	for i := range 2 {
		if errs[i] != nil {
			t.Fatalf("release %d: %v", i, errs[i])
		}
		if !bytes.Equal(keys[i].Key, dek) {
			t.Errorf("release %d: key differs from the DEK", i)
		}
	}
}
