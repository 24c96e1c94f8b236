package devca

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

const (
	// BundleFile is the trust bundle (the CA certificate) in a dev certs
	// directory; give it to --bundle.
	BundleFile = "ca.pem"
	// CAKeyFile is the CA's private key in a dev certs directory (mode
	// 0600); AddSVID needs it.
	CAKeyFile = "ca-key.pem"

	// DefaultSVIDTTL is the SVID lifetime kbsctl dev certs uses by default.
	DefaultSVIDTTL = 24 * time.Hour

	// maxNameLen bounds a name so file names stay well below NAME_MAX.
	maxNameLen = 200
)

// ValidateName checks a dev identity name: one or more "/"-separated
// segments, each of [a-z0-9-]+, at most 200 bytes, not "ca" and not ending in
// "-key" (those would collide with other files in the directory).
func ValidateName(name string) error {
	if name == "" {
		return errors.New("devca: identity name is empty")
	}
	if len(name) > maxNameLen {
		return fmt.Errorf("devca: identity name is %d bytes, at most %d allowed", len(name), maxNameLen)
	}
	for seg := range strings.SplitSeq(name, "/") {
		if seg == "" {
			return fmt.Errorf("devca: identity name %q has an empty path segment", name)
		}
		for _, r := range seg {
			if (r < 'a' || r > 'z') && (r < '0' || r > '9') && r != '-' {
				return fmt.Errorf("devca: identity name %q: character %q not allowed (use a-z, 0-9, '-' and '/')", name, r)
			}
		}
	}
	if name == "ca" {
		return errors.New(`devca: identity name "ca" is reserved for the CA files`)
	}
	if strings.HasSuffix(name, "-key") {
		return fmt.Errorf("devca: identity name %q must not end in \"-key\" (its certificate file would look like another name's key file)", name)
	}
	return nil
}

// SVIDFiles returns the certificate and key file names (without directory)
// for a dev identity name: "/" becomes "_", so "ns/demo/loader" gives
// ns_demo_loader.pem and ns_demo_loader-key.pem.
func SVIDFiles(name string) (certFile, keyFile string, err error) {
	if err := ValidateName(name); err != nil {
		return "", "", err
	}
	base := strings.ReplaceAll(name, "/", "_")
	return base + ".pem", base + "-key.pem", nil
}

// IDForName returns spiffe://td/<name>.
func IDForName(td spiffeid.TrustDomain, name string) (spiffeid.ID, error) {
	if err := ValidateName(name); err != nil {
		return spiffeid.ID{}, err
	}
	id, err := spiffeid.FromPath(td, "/"+name)
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("devca: identity name %q: %w", name, err)
	}
	return id, nil
}

// WriteDir creates a new CA for td and writes it to dir (created with mode
// 0700 if missing) as ca.pem and ca-key.pem, plus an SVID valid for ttl for
// spiffe://td/<name> for each name. It refuses to overwrite any existing
// file and writes nothing if one exists. It returns the paths written.
func WriteDir(dir string, td spiffeid.TrustDomain, names []string, ttl time.Duration) ([]string, error) {
	if ttl <= 0 {
		return nil, fmt.Errorf("devca: SVID lifetime %s must be positive", ttl)
	}
	ca, err := New(td, Options{CATTL: max(DefaultCATTL, ttl+backdate)})
	if err != nil {
		return nil, err
	}
	return ca.WriteDir(dir, names, ttl)
}

// WriteDir writes the CA and one SVID per name to dir; see the WriteDir
// function.
func (ca *CA) WriteDir(dir string, names []string, ttl time.Duration) ([]string, error) {
	certPEM, keyPEM, err := ca.MarshalPEM()
	if err != nil {
		return nil, err
	}
	files := []file{
		{name: BundleFile, data: certPEM, perm: 0o644},
		{name: CAKeyFile, data: keyPEM, perm: 0o600},
	}
	more, err := ca.svidFileSet(names, ttl)
	if err != nil {
		return nil, err
	}
	return writeFiles(dir, append(files, more...))
}

// WriteSVIDs writes one SVID per name to dir, all or none, refusing to
// overwrite. It returns the paths written.
func (ca *CA) WriteSVIDs(dir string, names []string, ttl time.Duration) ([]string, error) {
	files, err := ca.svidFileSet(names, ttl)
	if err != nil {
		return nil, err
	}
	return writeFiles(dir, files)
}

// WriteOrExtendDir is what `kbsctl dev certs DIR --trust-domain TD --id …`
// runs: if dir holds no ca.pem yet it is WriteDir; otherwise the SVIDs are
// issued by the CA already in dir (ca.pem, ca-key.pem), and td, unless zero,
// must be that CA's trust domain. Either way nothing is overwritten and, on
// error, nothing is written. It returns the paths written.
func WriteOrExtendDir(dir string, td spiffeid.TrustDomain, names []string, ttl time.Duration) ([]string, error) {
	_, err := os.Lstat(filepath.Join(dir, BundleFile))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if td.IsZero() {
			return nil, fmt.Errorf("devca: %s holds no CA yet: a trust domain is required", dir)
		}
		return WriteDir(dir, td, names, ttl)
	case err != nil:
		return nil, fmt.Errorf("devca: %w", err)
	}
	ca, err := LoadDir(dir, Options{})
	if err != nil {
		return nil, err
	}
	if !td.IsZero() && td != ca.TrustDomain() {
		return nil, fmt.Errorf("devca: the CA in %s is for trust domain %s, not %s", dir, ca.TrustDomain(), td)
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("devca: %s already holds a CA and no identity names were given", dir)
	}
	return ca.WriteSVIDs(dir, names, ttl)
}

// LoadDir loads the CA that WriteDir wrote to dir.
func LoadDir(dir string, opts Options) (*CA, error) {
	certPEM, err := os.ReadFile(filepath.Join(dir, BundleFile))
	if err != nil {
		return nil, fmt.Errorf("devca: read CA certificate: %w", err)
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, CAKeyFile))
	if err != nil {
		return nil, fmt.Errorf("devca: read CA key: %w", err)
	}
	return Load(certPEM, keyPEM, opts)
}

// AddSVID loads the CA in dir (written by WriteDir) and writes one more SVID
// valid for ttl for spiffe://TD/<name>, refusing to overwrite. It returns
// the SPIFFE ID and the paths written.
func AddSVID(dir, name string, ttl time.Duration) (spiffeid.ID, []string, error) {
	ca, err := LoadDir(dir, Options{})
	if err != nil {
		return spiffeid.ID{}, nil, err
	}
	return ca.WriteSVID(dir, name, ttl)
}

// WriteSVID writes an SVID for spiffe://TD/<name> valid for ttl to dir,
// refusing to overwrite. It returns the SPIFFE ID and the paths written.
func (ca *CA) WriteSVID(dir, name string, ttl time.Duration) (spiffeid.ID, []string, error) {
	id, files, err := ca.svidFiles(name, ttl)
	if err != nil {
		return spiffeid.ID{}, nil, err
	}
	written, err := writeFiles(dir, files)
	if err != nil {
		return spiffeid.ID{}, nil, err
	}
	return id, written, nil
}

func (ca *CA) svidFileSet(names []string, ttl time.Duration) ([]file, error) {
	var files []file
	seen := make(map[string]bool, len(names))
	for _, name := range names {
		if seen[name] {
			return nil, fmt.Errorf("devca: identity name %q given twice", name)
		}
		seen[name] = true
		_, more, err := ca.svidFiles(name, ttl)
		if err != nil {
			return nil, err
		}
		files = append(files, more...)
	}
	return files, nil
}

type file struct {
	name string
	data []byte
	perm fs.FileMode
}

func (ca *CA) svidFiles(name string, ttl time.Duration) (spiffeid.ID, []file, error) {
	certFile, keyFile, err := SVIDFiles(name)
	if err != nil {
		return spiffeid.ID{}, nil, err
	}
	id, err := IDForName(ca.td, name)
	if err != nil {
		return spiffeid.ID{}, nil, err
	}
	svid, err := ca.Issue(id, ttl)
	if err != nil {
		return spiffeid.ID{}, nil, err
	}
	certPEM, keyPEM, err := MarshalSVID(svid)
	if err != nil {
		return spiffeid.ID{}, nil, err
	}
	return id, []file{
		{name: certFile, data: certPEM, perm: 0o644},
		{name: keyFile, data: keyPEM, perm: 0o600},
	}, nil
}

// writeFiles writes all files into dir or none: it first checks that no
// target exists, then creates each with O_EXCL (so a file appearing in the
// meantime is not overwritten either) and removes what it wrote on failure.
func writeFiles(dir string, files []file) (written []string, err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("devca: create directory: %w", err)
	}
	for _, f := range files {
		p := filepath.Join(dir, f.name)
		if _, err := os.Lstat(p); err == nil {
			return nil, fmt.Errorf("devca: %s already exists; refusing to overwrite", p)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("devca: %w", err)
		}
	}
	defer func() {
		if err != nil {
			for _, p := range written {
				_ = os.Remove(p)
			}
			written = nil
		}
	}()
	for _, f := range files {
		p := filepath.Join(dir, f.name)
		if err := writeNew(p, f.data, f.perm); err != nil {
			return written, err
		}
		written = append(written, p)
	}
	return written, nil
}

func writeNew(path string, data []byte, perm fs.FileMode) error {
	fh, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("devca: %s already exists; refusing to overwrite", path)
		}
		return fmt.Errorf("devca: %w", err)
	}
	if _, err := fh.Write(data); err != nil {
		fh.Close()
		os.Remove(path)
		return fmt.Errorf("devca: write %s: %w", path, err)
	}
	if err := fh.Close(); err != nil {
		os.Remove(path)
		return fmt.Errorf("devca: write %s: %w", path, err)
	}
	return nil
}
