package broker

import (
	"container/list"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/cml-project/cml/keyrelease"
	"github.com/cml-project/cml/server/policy"
)

// challenges holds the outstanding GetChallenge nonces and remembers, for a
// while, the ones consumed or expired, so ReleaseKey can tell
// nonce_unknown, nonce_expired and nonce_reused apart.
//
// Nonces are stored by their SHA-256 only. A lookup is a map access keyed
// by that hash — timing reveals at most something about a hash of a
// 256-bit random value, not the nonce — and the entry found is confirmed
// with a constant-time comparison.
//
// Memory is bounded. Outstanding challenges: at most maxPerCaller per SPIFFE
// ID and maxTotal in all; beyond either, issue refuses (the caller gets
// ResourceExhausted and retries later) rather than evicting another
// outstanding challenge, which would make a concurrent loader's release fail
// after it has already produced a quote. Remembered (consumed or expired)
// nonces: at most maxTotal, the oldest forgotten first. Forgetting one only
// turns a later nonce_reused or nonce_expired into nonce_unknown — it is
// still a denial; security never depends on this memory.
//
// Expired entries are swept on every call, from the front of insertion-
// ordered lists (all challenges have the same TTL, so insertion order is
// expiry order; a clock that moves backwards only delays a sweep, since
// every entry is checked against its own expiry when used).
type challenges struct {
	ttl          time.Duration
	maxPerCaller int
	maxTotal     int

	mu        sync.Mutex
	active    map[[32]byte]*list.Element // of *challenge
	order     *list.List                 // of *challenge, oldest first
	perCaller map[string]int
	spent     map[[32]byte]*list.Element // of *spentNonce
	spentList *list.List                 // of *spentNonce, oldest first
}

type challenge struct {
	hash   [32]byte
	caller string
	keyID  string
	expiry time.Time
}

// spentNonce remembers a consumed or expired nonce until forget.
type spentNonce struct {
	hash   [32]byte
	reason string // nonce_reused or nonce_expired
	forget time.Time
}

func newChallenges(ttl time.Duration, maxPerCaller, maxTotal int) *challenges {
	return &challenges{
		ttl: ttl, maxPerCaller: maxPerCaller, maxTotal: maxTotal,
		active: map[[32]byte]*list.Element{}, order: list.New(), perCaller: map[string]int{},
		spent: map[[32]byte]*list.Element{}, spentList: list.New(),
	}
}

// errTooMany is returned by issue when a bound is reached.
type errTooMany struct{ scope string }

func (e errTooMany) Error() string { return "broker: too many outstanding challenges " + e.scope }

// issue draws a fresh nonce from r, bound to (caller, keyID), and returns
// it with its expiry.
func (c *challenges) issue(r io.Reader, caller, keyID string, now time.Time) ([]byte, time.Time, error) {
	nonce := make([]byte, keyrelease.NonceSize)
	if _, err := io.ReadFull(r, nonce); err != nil {
		return nil, time.Time{}, fmt.Errorf("broker: read random nonce: %w", err)
	}
	h := sha256.Sum256(nonce)
	expiry := now.Add(c.ttl)

	c.mu.Lock()
	defer c.mu.Unlock()
	c.sweep(now)
	if c.perCaller[caller] >= c.maxPerCaller {
		return nil, time.Time{}, errTooMany{fmt.Sprintf("for this caller (limit %d)", c.maxPerCaller)}
	}
	if c.order.Len() >= c.maxTotal {
		return nil, time.Time{}, errTooMany{fmt.Sprintf("in total (limit %d)", c.maxTotal)}
	}
	if _, dup := c.active[h]; dup {
		// 2^-256; a broken random source is the only way here.
		return nil, time.Time{}, fmt.Errorf("broker: random source repeated a nonce")
	}
	c.active[h] = c.order.PushBack(&challenge{hash: h, caller: caller, keyID: keyID, expiry: expiry})
	c.perCaller[caller]++
	return nonce, expiry, nil
}

// consume uses up a nonce presented by caller for keyID. It returns "" if
// the nonce is valid for them, else the reason code. A nonce that was issued
// is consumed by any presentation — even by another caller or for another
// key — since it must be considered exposed.
func (c *challenges) consume(nonce []byte, caller, keyID string, now time.Time) string {
	h := sha256.Sum256(nonce)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sweep(now)
	if el, ok := c.active[h]; ok {
		ch := el.Value.(*challenge)
		if subtle.ConstantTimeCompare(ch.hash[:], h[:]) != 1 {
			panic("broker: challenge stored under another hash")
		}
		c.remove(el)
		if now.After(ch.expiry) {
			c.remember(h, policy.ReasonNonceExpired, ch.expiry.Add(c.ttl))
			return policy.ReasonNonceExpired
		}
		c.remember(h, policy.ReasonNonceReused, ch.expiry.Add(c.ttl))
		switch {
		case ch.caller != caller:
			return policy.ReasonNonceWrongCaller
		case ch.keyID != keyID:
			return policy.ReasonNonceWrongKey
		}
		return ""
	}
	if el, ok := c.spent[h]; ok {
		return el.Value.(*spentNonce).reason
	}
	return policy.ReasonNonceUnknown
}

// outstanding returns the number of outstanding challenges, after a sweep.
func (c *challenges) outstanding(now time.Time) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sweep(now)
	return c.order.Len()
}

// remembered returns the number of remembered spent nonces, after a sweep.
func (c *challenges) remembered(now time.Time) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sweep(now)
	return c.spentList.Len()
}

func (c *challenges) remove(el *list.Element) {
	ch := c.order.Remove(el).(*challenge)
	delete(c.active, ch.hash)
	if c.perCaller[ch.caller]--; c.perCaller[ch.caller] <= 0 {
		delete(c.perCaller, ch.caller)
	}
}

func (c *challenges) remember(h [32]byte, reason string, forget time.Time) {
	if el, ok := c.spent[h]; ok {
		c.spentList.Remove(el)
	}
	for c.spentList.Len() >= c.maxTotal {
		old := c.spentList.Remove(c.spentList.Front()).(*spentNonce)
		delete(c.spent, old.hash)
	}
	c.spent[h] = c.spentList.PushBack(&spentNonce{hash: h, reason: reason, forget: forget})
}

// sweep moves expired challenges to the spent memory (as nonce_expired)
// and forgets spent nonces past their time. Called with mu held.
func (c *challenges) sweep(now time.Time) {
	for el := c.order.Front(); el != nil; el = c.order.Front() {
		ch := el.Value.(*challenge)
		if !now.After(ch.expiry) {
			break
		}
		c.remove(el)
		c.remember(ch.hash, policy.ReasonNonceExpired, ch.expiry.Add(c.ttl))
	}
	for el := c.spentList.Front(); el != nil; el = c.spentList.Front() {
		s := el.Value.(*spentNonce)
		if !now.After(s.forget) {
			break
		}
		c.spentList.Remove(el)
		delete(c.spent, s.hash)
	}
}
