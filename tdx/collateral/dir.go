package collateral

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// parseFileName maps a body file name of the directory layout to its key.
func parseFileName(name string) (Key, bool) {
	var k Key
	switch {
	case name == "qeidentity.json":
		k = Key{Kind: KindQEIdentity}
	case name == "rootcrl.der":
		k = Key{Kind: KindRootCRL}
	case strings.HasPrefix(name, "tcbinfo-") && strings.HasSuffix(name, ".json"):
		k = Key{Kind: KindTCBInfo, Param: strings.TrimSuffix(strings.TrimPrefix(name, "tcbinfo-"), ".json")}
	case strings.HasPrefix(name, "pckcrl-") && strings.HasSuffix(name, ".der"):
		k = Key{Kind: KindPCKCRL, Param: strings.TrimSuffix(strings.TrimPrefix(name, "pckcrl-"), ".der")}
	default:
		return Key{}, false
	}
	return k, k.validate() == nil
}

// readLimited reads a regular file of at most maxBodySize bytes.
func readLimited(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxBodySize+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxBodySize {
		return nil, fmt.Errorf("collateral: %s exceeds %d bytes: %w", path, maxBodySize, ErrInvalid)
	}
	return b, nil
}

// ReadEntry reads the document k from dir. A missing body or issuer chain
// file is ErrMissing; nothing is validated here (see Entry.Parse).
func ReadEntry(dir string, k Key) (*Entry, error) {
	if err := k.validate(); err != nil {
		return nil, err
	}
	body, err := readLimited(filepath.Join(dir, k.bodyFile()))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("collateral: %s not in %s: %w", k.bodyFile(), dir, ErrMissing)
	}
	if err != nil {
		return nil, fmt.Errorf("collateral: read %s: %w", k.bodyFile(), err)
	}
	e := &Entry{Key: k, Body: body}
	if cf := k.chainFile(); cf != "" {
		e.IssuerChain, err = readLimited(filepath.Join(dir, cf))
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("collateral: %s not in %s: %w", cf, dir, ErrMissing)
		}
		if err != nil {
			return nil, fmt.Errorf("collateral: read %s: %w", cf, err)
		}
	}
	return e, nil
}

// ReadDir reads every document in dir. Files that are not part of the
// layout are an error naming them (hidden files are ignored), so a typo in
// an air-gapped bundle is caught at import rather than at attestation.
func ReadDir(dir string) ([]*Entry, error) {
	des, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("collateral: %w", err)
	}
	var entries []*Entry
	chains := map[string]bool{}
	for _, de := range des {
		name := de.Name()
		if strings.HasPrefix(name, ".") {
			continue
		}
		if strings.HasSuffix(name, ".issuer-chain.pem") {
			chains[name] = true
			continue
		}
		k, ok := parseFileName(name)
		if !ok || !de.Type().IsRegular() {
			return nil, fmt.Errorf("collateral: %s: %q is not a collateral file of the layout: %w", dir, name, ErrInvalid)
		}
		e, err := ReadEntry(dir, k)
		if err != nil {
			return nil, err
		}
		entries = append(entries, e)
	}
	for _, e := range entries {
		delete(chains, e.chainFile())
	}
	for name := range chains {
		return nil, fmt.Errorf("collateral: %s: %q has no matching body file: %w", dir, name, ErrInvalid)
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].bodyFile() < entries[j].bodyFile() })
	return entries, nil
}

// WriteEntry stores e in dir (created 0755 if needed) in the directory
// layout. Each file is written to a temporary name, synced and renamed, and
// the issuer chain is written before the body, so a reader never sees a
// partial file.
func WriteEntry(dir string, e *Entry) error {
	if err := e.Key.validate(); err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("collateral: %w", err)
	}
	if cf := e.chainFile(); cf != "" {
		if err := writeAtomic(dir, cf, e.IssuerChain); err != nil {
			return err
		}
	}
	if err := writeAtomic(dir, e.bodyFile(), e.Body); err != nil {
		return err
	}
	return syncDir(dir)
}

func writeAtomic(dir, name string, data []byte) (err error) {
	f, err := os.CreateTemp(dir, "."+name+".tmp-*")
	if err != nil {
		return fmt.Errorf("collateral: %w", err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			os.Remove(tmp)
		}
	}()
	if _, err = f.Write(data); err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp, 0o644)
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(dir, name))
	}
	if err != nil {
		return fmt.Errorf("collateral: write %s: %w", name, err)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("collateral: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("collateral: sync %s: %w", dir, err)
	}
	return nil
}

// ImportAction says what Import did with one document.
type ImportAction string

// Import actions.
const (
	Installed ImportAction = "installed"  // written to the destination
	Unchanged ImportAction = "unchanged"  // the destination holds the same bytes
	KeptNewer ImportAction = "kept-newer" // the destination holds a newer issue; not rolled back
)

// ImportResult reports one imported document.
type ImportResult struct {
	Info
	Action ImportAction
}

// Import copies the collateral bundle in srcDir (the directory layout, as
// written by Getter.Prefetch on a connected machine, by tdxsim, or by hand)
// into dstDir, the directory a broker serves collateral from. Every
// document is parsed and checked first (see Entry.Parse) and must not be
// expired at now; if any fails, nothing is written. A document older (by
// issue date) than the one already installed is not installed, so an old
// bundle cannot roll back collateral.
//
// It backs `kbsctl collateral import DIR`.
func Import(ctx context.Context, srcDir, dstDir string, now time.Time) ([]ImportResult, error) {
	entries, err := ReadDir(srcDir)
	if err != nil {
		return nil, err
	}
	if len(entries) == 0 {
		return nil, fmt.Errorf("collateral: %s holds no collateral: %w", srcDir, ErrMissing)
	}
	results := make([]ImportResult, len(entries))
	for i, e := range entries {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		info, err := e.Parse()
		if err != nil {
			return nil, fmt.Errorf("collateral: import %s: %w", e.bodyFile(), err)
		}
		if now.After(info.NextUpdate) {
			return nil, fmt.Errorf("collateral: import %s: nextUpdate %s is before now %s: %w",
				e.bodyFile(), info.NextUpdate.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339), ErrExpired)
		}
		results[i] = ImportResult{Info: info, Action: Installed}
		old, err := ReadEntry(dstDir, e.Key)
		if err != nil {
			continue // nothing usable installed: install
		}
		if bytes.Equal(old.Body, e.Body) && bytes.Equal(old.IssuerChain, e.IssuerChain) {
			results[i].Action = Unchanged
			continue
		}
		if oldInfo, err := old.Parse(); err == nil && oldInfo.IssueDate.After(info.IssueDate) {
			results[i].Action = KeptNewer
		}
	}
	for i, e := range entries {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if results[i].Action != Installed {
			continue
		}
		if err := WriteEntry(dstDir, e); err != nil {
			return nil, err
		}
	}
	return results, nil
}

func statBody(dir string, k Key) (time.Time, error) {
	fi, err := os.Stat(filepath.Join(dir, k.bodyFile()))
	if err != nil {
		return time.Time{}, err
	}
	return fi.ModTime(), nil
}
