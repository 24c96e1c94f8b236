package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/cml-project/cml/server/kek"
	"github.com/cml-project/cml/server/store"
)

func compactCommand() *command {
	var dbPath, dataDir, kekFile string
	return &command{
		name:     "compact",
		synopsis: "--db PATH | --data-dir DIR [--kek-file FILE]",
		summary:  "rewrite a stopped broker's keystore so destroyed keys leave the file",
		help: `Rewrites the keystore database without its free pages. Destroying a key or
a version deletes its sealed bytes from the database, but bbolt leaves freed
pages as they were, so the sealed bytes can stay in the file until they are
reused; anyone with a copy of the file and the KEK could open them. Compact
copies every live record into PATH` + store.CompactTempSuffix + `, syncs it, checks it
(integrity check, audit chain, same content as the original), renames it
over PATH and syncs the directory, then overwrites the old file's contents
with zeros. An interruption leaves the old or the new database at PATH,
never a partial one; a leftover PATH` + store.CompactTempSuffix + ` is removed by the next run.

Run it in a maintenance window: it refuses while a kbs serves the database.
The new file keeps the old one's mode and owner. Backups and snapshots taken
before it still hold the destroyed keys' sealed bytes, and software cannot
promise what the disk keeps of overwritten blocks (docs/keystore.md).

The KEK is needed to verify the database: from --kek-file, from the CML_KEK
environment variable, or else the file ` + store.KEKFileName + ` beside the database.

Examples:
  kbs compact --data-dir /var/lib/kbs
  kbs compact --db /var/lib/kbs/keystore.db --kek-file /etc/kbs/kek/kek`,
		setup: func(fl *flags) action {
			fl.String(&dbPath, "db", "PATH", "", "the keystore database to compact")
			fl.String(&dataDir, "data-dir", "DIR", "", "the data directory instead: compacts DIR/"+store.DBFileName+"\n(give --db or --data-dir; if both, they must agree)")
			fl.String(&kekFile, "kek-file", "FILE", "", "the KEK file (default: "+store.KEKFileName+" beside the database)")
			fl.Env(kek.EnvVar, "the KEK as 64 hex digits, instead of a KEK file;\nconflicts with --kek-file")
			return func(ctx context.Context, e *env) error {
				return runCompact(ctx, e, dbPath, dataDir, kekFile)
			}
		},
	}
}

func runCompact(ctx context.Context, e *env, dbPath, dataDir, kekFile string) error {
	switch {
	case dbPath == "" && dataDir == "":
		return usagef("--db or --data-dir is required")
	case dbPath != "" && dataDir != "" && filepath.Clean(dbPath) != store.DBPath(dataDir):
		// KBS_DATA_DIR may be in the environment for serve; agreeing
		// values are fine.
		return usagef("--db %s and --data-dir %s name different databases; give one", dbPath, dataDir)
	case dbPath == "":
		dbPath = store.DBPath(dataDir)
	default:
		dataDir = filepath.Dir(dbPath)
	}
	// Name a missing database before a missing KEK file beside it.
	if _, err := os.Lstat(dbPath); errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("compact: database %s does not exist: %w", dbPath, err)
	}
	provider, _, err := loadKEK(dataDir, kekFile, e.lookupEnv, true)
	if err != nil {
		return fmt.Errorf("compact: %w", err)
	}
	res, err := store.Compact(ctx, dbPath, store.Options{KEK: provider, Now: e.now})
	if err != nil {
		return fmt.Errorf("compact: %w", err)
	}
	if res.StaleTemp != "" {
		fmt.Fprintf(e.stdout, "Removed %s, left by an interrupted compaction.\n", res.StaleTemp)
	}
	fmt.Fprintf(e.stdout, "Compacted %s: %s before, %s after.\n", res.Path, byteSize(res.SizeBefore), byteSize(res.SizeAfter))
	fmt.Fprintf(e.stdout, "  verified: integrity check, audit chain of %d records, same %d entries as before\n", res.AuditRecords, res.Entries)
	if res.Scrubbed {
		fmt.Fprintf(e.stdout, "  the old file's contents were overwritten with zeros (best effort: see docs/keystore.md)\n")
	}
	for _, w := range res.Warnings {
		fmt.Fprintf(e.stderr, "kbs: warning: %s\n", w)
	}
	return nil
}

// byteSize prints n bytes exactly and, from 1 KiB, in binary units.
func byteSize(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d bytes", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%d bytes (%.1f %ciB)", n, float64(n)/float64(div), "KMGTP"[exp])
}
