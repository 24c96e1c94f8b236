package loader

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"

	"github.com/cml-project/cml/emdl"
)

// StagingName is the directory the loader decrypts into when --dst is an
// existing empty directory (an emptyDir mount point). Its presence in --dst
// marks a run that did not finish; the next run removes everything in --dst
// and starts over.
const StagingName = ".cml-loader-staging"

// output is where one run writes the model.
type output struct {
	dst     string
	staging string // "" when dst was absent: emdl.Decrypt creates dst itself
	target  string // the path given to emdl.Decrypt
	moving  bool   // commit has started moving entries into dst
}

// prepareDst checks dst and decides how the model gets there:
//
//   - dst does not exist (its parent does): emdl.Decrypt writes a temporary
//     ".<name>.emdl-partial-*" beside dst and renames it to dst when the
//     whole model verified. A partial left by a killed run is removed by the
//     next one.
//   - dst is an empty directory, typically a volume's mount point, which
//     cannot be renamed over: the model is decrypted into dst/StagingName
//     and, once verified, its top-level entries (or its one file) are
//     renamed into dst. Nothing is written outside dst.
//   - dst holds StagingName: a previous run into this empty directory was
//     interrupted; everything in dst came from it and is removed first.
//   - anything else (a file, a non-empty directory) is refused: the loader
//     never overwrites or merges.
func prepareDst(dst string, log *slog.Logger) (*output, error) {
	dst = filepath.Clean(dst)
	fi, err := os.Lstat(dst)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		parent := filepath.Dir(dst)
		if pfi, err := os.Stat(parent); err != nil || !pfi.IsDir() {
			return nil, &UsageError{Msg: fmt.Sprintf("the parent directory %s of --dst %s does not exist (the loader creates only --dst itself)", parent, dst)}
		}
		return &output{dst: dst, target: dst}, nil
	case err != nil:
		return nil, fmt.Errorf("loader: checking --dst: %w", err)
	case !fi.IsDir():
		return nil, &UsageError{Msg: fmt.Sprintf("--dst %s exists and is not a directory", dst)}
	}
	entries, err := os.ReadDir(dst)
	if err != nil {
		return nil, fmt.Errorf("loader: reading --dst: %w", err)
	}
	leftover := false
	for _, e := range entries {
		if e.Name() == StagingName {
			leftover = true
		}
	}
	if len(entries) > 0 && !leftover {
		return nil, &UsageError{Msg: fmt.Sprintf("--dst %s is not empty (it holds %q and %d other entries): the loader writes only to an absent path or an empty directory and never overwrites; empty it, or give a new path inside it", dst, entries[0].Name(), len(entries)-1)}
	}
	if leftover {
		log.Warn("removing what an interrupted run left in --dst", "dst", dst, "entries", len(entries))
		for _, e := range entries {
			if err := os.RemoveAll(filepath.Join(dst, e.Name())); err != nil {
				return nil, fmt.Errorf("loader: removing the leftovers of an interrupted run from --dst: %w", err)
			}
		}
	}
	staging := filepath.Join(dst, StagingName)
	if err := os.Mkdir(staging, 0o700); err != nil {
		return nil, fmt.Errorf("loader: creating the staging directory in --dst: %w", err)
	}
	if err := syncDir(dst); err != nil {
		os.Remove(staging)
		return nil, fmt.Errorf("loader: syncing --dst: %w", err)
	}
	return &output{dst: dst, staging: staging, target: filepath.Join(staging, "model")}, nil
}

// abort removes what a failed run wrote (emdl has removed its partial). If
// commit failed half-way, the entries already moved into dst stay there with
// the staging directory, and the next run removes them all.
func (o *output) abort() {
	if o.staging != "" && !o.moving {
		os.RemoveAll(o.staging)
	}
}

// commit moves the verified model from the staging directory into dst.
// Nothing to do when emdl wrote dst itself.
func (o *output) commit(src string, single bool) error {
	if o.staging == "" {
		return nil
	}
	var moves [][2]string // from, to
	if single {
		name, err := singleFileName(src)
		if err != nil {
			return err
		}
		moves = append(moves, [2]string{o.target, filepath.Join(o.dst, name)})
	} else {
		entries, err := os.ReadDir(o.target)
		if err != nil {
			return fmt.Errorf("loader: reading the decrypted model: %w", err)
		}
		for _, e := range entries {
			if e.Name() == StagingName {
				return fmt.Errorf("loader: the model has a top-level entry named %s, which --dst as a directory reserves: %w (give a --dst path that does not exist)", StagingName, emdl.ErrUnsafePath)
			}
			moves = append(moves, [2]string{filepath.Join(o.target, e.Name()), filepath.Join(o.dst, e.Name())})
		}
	}
	o.moving = true
	for _, m := range moves {
		if _, err := os.Lstat(m[1]); !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("loader: %s appeared in --dst while the model was being decrypted", m[1])
		}
		if err := os.Rename(m[0], m[1]); err != nil {
			return fmt.Errorf("loader: moving the decrypted model into --dst: %w", err)
		}
	}
	if err := syncDir(o.dst); err != nil {
		return fmt.Errorf("loader: syncing --dst: %w", err)
	}
	// Last: removing the staging directory marks the run complete.
	if err := os.RemoveAll(o.staging); err != nil {
		return fmt.Errorf("loader: removing the staging directory: %w", err)
	}
	if err := syncDir(o.dst); err != nil {
		return fmt.Errorf("loader: syncing --dst: %w", err)
	}
	return nil
}

// singleFileName is the name of a single-file model's one file: the model
// directory mirrors the plaintext tree, and Decrypt has just checked that it
// holds exactly the manifest and that file.
func singleFileName(src string) (string, error) {
	entries, err := os.ReadDir(src)
	if err != nil {
		return "", fmt.Errorf("loader: reading the model directory: %w", err)
	}
	var names []string
	for _, e := range entries {
		if e.Name() != emdl.ManifestName {
			names = append(names, e.Name())
		}
	}
	if len(names) != 1 || names[0] == StagingName {
		return "", fmt.Errorf("loader: the single-file model in %s changed while it was decrypted: %w", src, emdl.ErrNotInManifest)
	}
	return names[0], nil
}

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Sync(); err != nil && !errors.Is(err, syscall.EINVAL) {
		return err
	}
	return nil
}
