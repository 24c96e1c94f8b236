package policy

import (
	"fmt"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// MaxIDPatternLen bounds one SPIFFE ID pattern (the SPIFFE specification
// bounds a SPIFFE ID to 2048 bytes).
const MaxIDPatternLen = 2048

// IDPattern matches SPIFFE IDs: either exactly one ID, or every ID of a
// trust domain whose path lies below a prefix.
//
//	spiffe://example.org/ns/ml/sa/loader   exactly this ID
//	spiffe://example.org/ns/ml/*           spiffe://example.org/ns/ml/<anything>, not .../ns/ml itself, not .../ns/mlx/a
//	spiffe://example.org/*                 every workload of example.org
//
// The prefix form matches by path segments: the caller's path must start
// with the pattern's path followed by "/". A "*" anywhere else is invalid.
type IDPattern struct {
	id     spiffeid.ID // exact ID, or the prefix without "/*"
	prefix bool
}

// ParseIDPattern parses an exact SPIFFE ID with a non-empty path, or a
// prefix ending in "/*". The error says what is wrong and how to write it.
func ParseIDPattern(s string) (IDPattern, error) {
	if len(s) > MaxIDPatternLen {
		return IDPattern{}, fmt.Errorf("is %d bytes, at most %d", len(s), MaxIDPatternLen)
	}
	base, prefix := strings.CutSuffix(s, "/*")
	if strings.Contains(base, "*") {
		return IDPattern{}, fmt.Errorf("%q: \"*\" is allowed only as a final path segment (\"spiffe://td/path/*\")", s)
	}
	id, err := spiffeid.FromString(base)
	if err != nil {
		return IDPattern{}, fmt.Errorf("%q is not a SPIFFE ID (want \"spiffe://trust-domain/path\" or \"spiffe://trust-domain/path/*\"): %v", s, err)
	}
	if !prefix && id.Path() == "" {
		return IDPattern{}, fmt.Errorf("%q names a trust domain, not a workload; write %q to allow every workload of it", s, s+"/*")
	}
	return IDPattern{id: id, prefix: prefix}, nil
}

// Match reports whether id matches the pattern. The zero IDPattern matches
// nothing.
func (p IDPattern) Match(id spiffeid.ID) bool {
	if p.id.IsZero() || id.IsZero() {
		return false
	}
	if !p.prefix {
		return p.id == id
	}
	if p.id.TrustDomain() != id.TrustDomain() {
		return false
	}
	return strings.HasPrefix(id.Path(), p.id.Path()+"/") && len(id.Path()) > len(p.id.Path())+1
}

// String returns the pattern in its parsed, canonical form.
func (p IDPattern) String() string {
	if p.id.IsZero() {
		return ""
	}
	if p.prefix {
		return p.id.String() + "/*"
	}
	return p.id.String()
}

// MatchAny reports whether id matches one of patterns.
func MatchAny(patterns []IDPattern, id spiffeid.ID) bool {
	for _, p := range patterns {
		if p.Match(id) {
			return true
		}
	}
	return false
}
