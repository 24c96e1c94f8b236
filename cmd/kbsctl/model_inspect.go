package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"text/tabwriter"

	"github.com/cml-project/cml/emdl"
	"github.com/cml-project/cml/internal/progress"
)

type modelInspect struct {
	json bool
}

// inspectJSON is the stable --json output of 'kbsctl model inspect'. Fields
// are only ever added, never renamed or removed.
type inspectJSON struct {
	Path       string `json:"path"`
	KeyID      string `json:"key_id"`
	KeyVersion uint32 `json:"key_version"`
	Suite      string `json:"suite"`
	ChunkSize  int    `json:"chunk_size"`
	SingleFile bool   `json:"single_file"`
	Files      int    `json:"files"`
	TotalSize  int64  `json:"total_size"`
	ModelID    string `json:"model_id"`
}

func modelInspectCommand() *command {
	return &command{
		name:     "inspect",
		synopsis: "DIR [--json]",
		args:     []string{"DIR"},
		summary:  "show an EMDL model's key id and version, suite, files and size (no key needed)",
		help: `
Prints what an EMDL model directory says about itself without a key: the key
id and version it was encrypted under, the cipher suite, the chunk size, the
number of files, the total plaintext size and the model id (random per
encryption, so two encryptions of the same files differ). Nothing is decrypted, so
nothing is authenticated either: only 'kbsctl model decrypt' (or the loader)
verifies a model.

--json prints one JSON object with the fields path, key_id, key_version,
suite, chunk_size, single_file, files, total_size (bytes) and model_id.

Examples:
  kbsctl model inspect ./llama-3-8b.emdl
  kbsctl model inspect ./llama-3-8b.emdl --json | jq -r .key_id
`,
		setup: func(fs *flag.FlagSet) action {
			c := &modelInspect{}
			fs.BoolVar(&c.json, "json", false, "print a JSON object instead of text")
			return c.run
		},
	}
}

func (c *modelInspect) run(_ context.Context, e *env, args []string) error {
	dir := args[0]
	if err := checkModelDir("inspect", dir); err != nil {
		return err
	}
	info, err := emdl.Inspect(dir)
	if err != nil {
		return explainModelError("inspect", dir, err)
	}
	if c.json {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(inspectJSON{
			Path:       dir,
			KeyID:      info.KeyID,
			KeyVersion: info.KeyVersion,
			Suite:      info.Suite,
			ChunkSize:  info.ChunkSize,
			SingleFile: info.SingleFile,
			Files:      info.Files,
			TotalSize:  info.TotalSize,
			ModelID:    info.ModelID,
		})
	}
	layout := fmt.Sprintf("directory, %d files", info.Files)
	if info.SingleFile {
		layout = "single file"
	} else if info.Files == 1 {
		layout = "directory, 1 file"
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "model:\t%s\n", sanitize(dir))
	fmt.Fprintf(tw, "key id:\t%s\n", sanitize(info.KeyID))
	fmt.Fprintf(tw, "key version:\t%d\n", info.KeyVersion)
	fmt.Fprintf(tw, "suite:\t%s\n", sanitize(info.Suite))
	fmt.Fprintf(tw, "chunk size:\t%s (%d bytes)\n", progress.Bytes(int64(info.ChunkSize)), info.ChunkSize)
	fmt.Fprintf(tw, "layout:\t%s\n", layout)
	fmt.Fprintf(tw, "plaintext:\t%s (%d bytes)\n", progress.Bytes(info.TotalSize), info.TotalSize)
	fmt.Fprintf(tw, "model id:\t%s\n", sanitize(info.ModelID))
	return tw.Flush()
}
