//go:build !unix

package store

import (
	"io/fs"
	"os"
)

// copyOwner is a no-op where files have no Unix owner.
func copyOwner(*os.File, fs.FileInfo) error { return nil }

// linkCount is unknown here; scrub then overwrites the old file.
func linkCount(fs.FileInfo) (uint64, bool) { return 0, false }
