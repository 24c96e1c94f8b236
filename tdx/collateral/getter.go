package collateral

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultPCSURL is the base URL of Intel's Provisioning Certification
// Service (API v4 paths are appended).
const DefaultPCSURL = "https://api.trustedservices.intel.com"

// IntelRootCRLURL is the CRL distribution point of the Intel SGX Root CA.
const IntelRootCRLURL = "https://certificates.trustedservices.intel.com/IntelSGXRootCA.der"

// DefaultFetchTimeout bounds one HTTP fetch when Config.FetchTimeout is 0.
const DefaultFetchTimeout = 15 * time.Second

// Config configures a Getter.
type Config struct {
	// Dir is the collateral directory: documents are loaded from it and
	// fetched documents are persisted to it, so a restart does not refetch.
	// Required.
	Dir string
	// Offline: serve only what Dir holds; never touch the network. A
	// missing or expired document is an immediate ErrMissing / ErrExpired.
	Offline bool
	// BaseURL is the Intel PCS v4 base URL (DefaultPCSURL) or a PCCS base
	// URL such as https://pccs.example:8081. Default DefaultPCSURL.
	BaseURL string
	// RootCRLURL is where the Intel SGX Root CA CRL is fetched. Default:
	// IntelRootCRLURL when BaseURL is Intel's PCS, else
	// BaseURL + "/sgx/certification/v4/rootcacrl" (the PCCS endpoint).
	RootCRLURL string
	// HTTPClient fetches documents. Required unless Offline; give it a
	// Timeout and, for a PCCS with a private CA, that CA in its TLS config.
	HTTPClient *http.Client
	// FetchTimeout bounds each fetch (DefaultFetchTimeout if 0).
	FetchTimeout time.Duration
	// RefreshAfter, if positive, refetches a document this long after it
	// was fetched even if it has not expired, to pick up TCB recoveries
	// early; if the refetch fails the cached document is served until its
	// nextUpdate. 0: keep a document until its nextUpdate. Online only.
	RefreshAfter time.Duration
	// Now is the clock. Required.
	Now func() time.Time
}

// Getter serves collateral documents to the TDX verifier, byte for byte as
// the collateral service sent them. It keeps each in memory until its
// nextUpdate, persists what it fetches to Config.Dir, and is safe for
// concurrent use. Its Get method matches the verifier's collateral source.
type Getter struct {
	cfg   Config
	mu    sync.RWMutex // guards slots (the map, not the slots) and keys
	slots map[Key]*slot
	// keys memoises KeyForURL (a pure function) for URLs that Get served:
	// go-tdx-guest asks for the same few URLs for every quote, and parsing
	// them was most of a steady-state Get. Bounded by maxKeys.
	keys map[string]Key
}

// maxKeys bounds Getter.keys: it is cleared when full. A platform needs
// four URLs, plus one per further FMSPC.
const maxKeys = 64

// slot caches one document. sem (capacity 1) serialises loading and
// fetching per key, so concurrent misses trigger one fetch, and waiting for
// it honours the caller's context. doc is the document served: stored only
// with sem held, loaded without it by get's fast path (a hit, the steady
// state, takes no lock but a read lock on the slot map).
type slot struct {
	sem chan struct{}
	doc atomic.Pointer[doc]
}

// doc is a loaded document, ready to serve. It and everything it refers to
// are immutable once stored in a slot: a newer document replaces it, so a
// caller still holding the old header and body sees them unchanged.
type doc struct {
	entry     *Entry
	info      Info
	fetchedAt time.Time
	// header (entry.Header(): the issuer chain URL-escaped) and body
	// (entry.Body, capacity clipped to its length) are what Get returns to
	// every caller, built once per document.
	header map[string][]string
	body   []byte
}

func newDoc(e *Entry, info Info, fetchedAt time.Time) *doc {
	return &doc{
		entry:     e,
		info:      info,
		fetchedAt: fetchedAt,
		header:    e.Header(),
		// Full slice expression: a caller's append reallocates instead of
		// writing past the end into memory another caller might share.
		body: e.Body[:len(e.Body):len(e.Body)],
	}
}

// New returns a Getter for cfg.
func New(cfg Config) (*Getter, error) {
	if cfg.Dir == "" {
		return nil, errors.New("collateral: Config.Dir is required")
	}
	if cfg.Now == nil {
		return nil, errors.New("collateral: Config.Now is required")
	}
	if !cfg.Offline {
		if cfg.HTTPClient == nil {
			return nil, errors.New("collateral: Config.HTTPClient is required unless Offline")
		}
		if cfg.BaseURL == "" {
			cfg.BaseURL = DefaultPCSURL
		}
		cfg.BaseURL = strings.TrimSuffix(cfg.BaseURL, "/")
		if u, err := url.Parse(cfg.BaseURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return nil, fmt.Errorf("collateral: BaseURL %q is not an http(s) URL", cfg.BaseURL)
		}
		if cfg.RootCRLURL == "" {
			if cfg.BaseURL == DefaultPCSURL {
				cfg.RootCRLURL = IntelRootCRLURL
			} else {
				cfg.RootCRLURL = cfg.BaseURL + "/sgx/certification/v4/rootcacrl"
			}
		}
		if cfg.FetchTimeout <= 0 {
			cfg.FetchTimeout = DefaultFetchTimeout
		}
	}
	return &Getter{cfg: cfg, slots: map[Key]*slot{}, keys: map[string]Key{}}, nil
}

// Get returns the response header and body for a collateral URL that
// go-tdx-guest asks for (see KeyForURL). Errors wrap ErrMissing,
// ErrExpired, ErrUnavailable, ErrInvalid or the context's error.
//
// The header map, its values and the body are the getter's cached copy,
// shared by every caller until the document is replaced: callers must not
// modify them (go-tdx-guest and the verifier only read them). The body's
// capacity is its length, so appending to it copies.
func (g *Getter) Get(ctx context.Context, rawURL string) (map[string][]string, []byte, error) {
	g.mu.RLock()
	k, known := g.keys[rawURL]
	g.mu.RUnlock()
	if !known {
		var err error
		if k, err = KeyForURL(rawURL); err != nil {
			return nil, nil, err
		}
	}
	d, err := g.get(ctx, k)
	if err != nil {
		return nil, nil, err
	}
	if !known {
		// Only URLs of documents that loaded: the FMSPC in a URL comes
		// from a PCK certificate not yet verified.
		g.mu.Lock()
		if len(g.keys) >= maxKeys {
			clear(g.keys)
		}
		g.keys[rawURL] = k
		g.mu.Unlock()
	}
	return d.header, d.body, nil
}

// Prefetch fetches (or loads) the TCB info of each FMSPC, the QE identity,
// both PCK CRLs and the root CRL, persisting them to Config.Dir. Run with
// an online Getter on a connected machine, it produces a bundle for
// Import on an air-gapped one.
func (g *Getter) Prefetch(ctx context.Context, fmspcs ...string) ([]Info, error) {
	keys := []Key{{Kind: KindQEIdentity}, {Kind: KindPCKCRL, Param: "platform"}, {Kind: KindPCKCRL, Param: "processor"}, {Kind: KindRootCRL}}
	for _, f := range fmspcs {
		keys = append(keys, Key{Kind: KindTCBInfo, Param: strings.ToLower(f)})
	}
	var infos []Info
	for _, k := range keys {
		if err := k.validate(); err != nil {
			return nil, err
		}
		d, err := g.get(ctx, k)
		if err != nil {
			return nil, err
		}
		infos = append(infos, d.info)
	}
	return infos, nil
}

func (g *Getter) slot(k Key) *slot {
	g.mu.RLock()
	s := g.slots[k]
	g.mu.RUnlock()
	if s != nil {
		return s
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	s = g.slots[k]
	if s == nil {
		s = &slot{sem: make(chan struct{}, 1)}
		g.slots[k] = s
	}
	return s
}

// get returns the document for k: the one in memory while it is unexpired
// and not due for refresh, else a newer one from the directory or the
// collateral service.
func (g *Getter) get(ctx context.Context, k Key) (*doc, error) {
	s := g.slot(k)
	// Fast path: the document in memory is good, nothing to load.
	if d := s.doc.Load(); d != nil && g.fresh(d, g.cfg.Now()) {
		return d, nil
	}
	select {
	case s.sem <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("collateral: %s: %w (%w)", k, ErrUnavailable, ctx.Err())
	}
	defer func() {
		// The FMSPC comes from a PCK certificate that is not yet verified
		// when go-tdx-guest asks for collateral: keep no state for keys
		// that never loaded, so bogus FMSPCs cannot grow the map.
		if s.doc.Load() == nil {
			g.mu.Lock()
			if g.slots[k] == s {
				delete(g.slots, k)
			}
			g.mu.Unlock()
		}
		<-s.sem
	}()

	// Another caller may have loaded it while this one waited.
	now := g.cfg.Now()
	cur := s.doc.Load()
	if cur != nil && g.fresh(cur, now) {
		return cur, nil
	}
	// Not in memory, expired, or due for refresh: the directory may hold a
	// newer copy (an import, or another process).
	if e, err := ReadEntry(g.cfg.Dir, k); err == nil {
		if info, perr := e.Parse(); perr == nil && (cur == nil || !info.NextUpdate.Before(cur.info.NextUpdate)) {
			fetchedAt := fileTime(g.cfg.Dir, k, now)
			if cur != nil {
				fetchedAt = cur.fetchedAt
			}
			cur = newDoc(e, info, fetchedAt)
			s.doc.Store(cur)
		}
	}
	valid := cur != nil && !now.After(cur.info.NextUpdate)
	if valid && !g.stale(cur, now) {
		return cur, nil
	}
	if g.cfg.Offline {
		if cur == nil {
			return nil, fmt.Errorf("collateral: %s: no %s in %s (offline): %w", k, k.bodyFile(), g.cfg.Dir, ErrMissing)
		}
		return nil, fmt.Errorf("collateral: %s: nextUpdate %s has passed (offline): %w", k, cur.info.NextUpdate.UTC().Format(time.RFC3339), ErrExpired)
	}
	e, info, err := g.fetch(ctx, k)
	if err == nil && now.After(info.NextUpdate) {
		err = fmt.Errorf("collateral: %s: fetched document expired at %s: %w", k, info.NextUpdate.UTC().Format(time.RFC3339), ErrExpired)
	}
	if err != nil {
		if valid { // refresh failed: keep serving the unexpired copy
			return cur, nil
		}
		return nil, err
	}
	if err := WriteEntry(g.cfg.Dir, e); err != nil {
		return nil, fmt.Errorf("collateral: %s: persisting: %w (%w)", k, ErrUnavailable, err)
	}
	d := newDoc(e, info, now)
	s.doc.Store(d)
	return d, nil
}

// fresh reports whether d can be served at now without looking further:
// unexpired and not due for refresh.
func (g *Getter) fresh(d *doc, now time.Time) bool {
	return !now.After(d.info.NextUpdate) && !g.stale(d, now)
}

func (g *Getter) stale(d *doc, now time.Time) bool {
	return !g.cfg.Offline && g.cfg.RefreshAfter > 0 && now.Sub(d.fetchedAt) >= g.cfg.RefreshAfter
}

// fileTime approximates when a persisted document was fetched by its
// body file's modification time.
func fileTime(dir string, k Key, now time.Time) time.Time {
	if fi, err := statBody(dir, k); err == nil {
		return fi
	}
	return now
}

func (g *Getter) url(k Key) string {
	switch k.Kind {
	case KindTCBInfo:
		return g.cfg.BaseURL + "/tdx/certification/v4/tcb?fmspc=" + k.Param
	case KindQEIdentity:
		return g.cfg.BaseURL + "/tdx/certification/v4/qe/identity"
	case KindPCKCRL:
		return g.cfg.BaseURL + "/sgx/certification/v4/pckcrl?ca=" + k.Param + "&encoding=der"
	default:
		return g.cfg.RootCRLURL
	}
}

func (g *Getter) fetch(ctx context.Context, k Key) (*Entry, Info, error) {
	ctx, cancel := context.WithTimeout(ctx, g.cfg.FetchTimeout)
	defer cancel()
	u := g.url(k)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, Info{}, fmt.Errorf("collateral: %s: %v: %w", k, err, ErrInvalid)
	}
	resp, err := g.cfg.HTTPClient.Do(req)
	if err != nil {
		return nil, Info{}, fmt.Errorf("collateral: fetch %s: %w (%v)", k, ErrUnavailable, err)
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusNotFound:
		return nil, Info{}, fmt.Errorf("collateral: fetch %s: %s answered 404: %w", k, u, ErrMissing)
	case resp.StatusCode != http.StatusOK:
		return nil, Info{}, fmt.Errorf("collateral: fetch %s: %s answered %d: %w", k, u, resp.StatusCode, ErrUnavailable)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBodySize+1))
	if err != nil {
		return nil, Info{}, fmt.Errorf("collateral: fetch %s: %w (%v)", k, ErrUnavailable, err)
	}
	if len(body) > maxBodySize {
		return nil, Info{}, fmt.Errorf("collateral: fetch %s: body exceeds %d bytes: %w", k, maxBodySize, ErrInvalid)
	}
	e := &Entry{Key: k, Body: body}
	if k.Kind == KindPCKCRL || k.Kind == KindRootCRL {
		e.Body = normalizeCRL(body)
	}
	if h := k.chainHeader(); h != "" {
		v := resp.Header.Get(h)
		if v == "" && k.Kind == KindTCBInfo {
			v = resp.Header.Get(headerTCBInfoChainOld)
		}
		if v == "" {
			return nil, Info{}, fmt.Errorf("collateral: fetch %s: response has no %s header: %w", k, h, ErrInvalid)
		}
		chain, err := url.QueryUnescape(v)
		if err != nil {
			return nil, Info{}, fmt.Errorf("collateral: fetch %s: %s header: %v: %w", k, h, err, ErrInvalid)
		}
		e.IssuerChain = []byte(chain)
	}
	info, err := e.Parse()
	if err != nil {
		return nil, Info{}, err
	}
	return e, info, nil
}
