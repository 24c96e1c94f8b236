package validate

import (
	"bytes"
	"testing"
)

// FuzzSplitDocuments: any input splits without panicking, and every
// document's bytes come from the input in order.
func FuzzSplitDocuments(f *testing.F) {
	f.Add([]byte("a: 1\n---\nb: 2\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		rest := data
		for _, d := range SplitDocuments(data) {
			i := bytes.Index(rest, d.Data)
			if i < 0 {
				t.Fatalf("document at line %d is not in the remaining input", d.Line)
			}
			rest = rest[i+len(d.Data):]
			_, _ = DecodeStrict(d.Data) // must not panic
		}
	})
}

// FuzzParseDockerfile: any input parses or fails without panicking, and
// every instruction has an upper-case command and a positive line.
func FuzzParseDockerfile(f *testing.F) {
	f.Add([]byte("FROM golang:1.26 AS build\nRUN go build \\\n ./cmd/kbs\nFROM scratch\n"))
	// One empty build context for every input: CheckDockerfile only reads
	// it, and a directory per input cost most of each execution.
	root := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		ins, err := ParseDockerfile(data)
		if err != nil {
			return
		}
		for _, in := range ins {
			if in.Line < 1 || in.Cmd == "" || in.Cmd != string(bytes.ToUpper([]byte(in.Cmd))) {
				t.Fatalf("bad instruction %+v", in)
			}
		}
		_ = CheckDockerfile("kbs", data, root)
	})
}
