package emdl_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"flag"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/cml-project/cml/emdl"
)

// go test ./emdl -run TestKnownAnswer -update rewrites testdata/kat/model
// from the current implementation. Only do so for a deliberate format
// change: the committed vector is what other implementations test against.
var update = flag.Bool("update", false, "rewrite testdata/kat/model from the current implementation")

const katDir = "testdata/kat/model"

// katRand is the known-answer tests' randomness: the concatenation of
// SHA-256("cml/v1/emdl/kat" ‖ counter as u32 BE) for counter = 0, 1, 2, …
type katRand struct {
	counter uint32
	buf     []byte
}

func (r *katRand) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		if len(r.buf) == 0 {
			block := sha256.Sum256(binary.BigEndian.AppendUint32([]byte("cml/v1/emdl/kat"), r.counter))
			r.counter++
			r.buf = block[:]
		}
		c := copy(p[n:], r.buf)
		r.buf = r.buf[c:]
		n += c
	}
	return n, nil
}

func katKey() []byte {
	k := make([]byte, emdl.KeySize)
	for i := range k {
		k[i] = byte(i)
	}
	return k
}

func katPlaintext() map[string]file {
	layer := make([]byte, 200) // four chunks of 64: 64, 64, 64, 8
	for i := range layer {
		layer[i] = byte(i * 7)
	}
	return map[string]file{
		"README.txt":         {data: []byte("EMDL v1 known-answer vector.\n"), mode: 0o644},
		"empty":              {data: nil, mode: 0o600},
		"weights/layer0.bin": {data: layer, mode: 0o640},
	}
}

func katOptions() emdl.EncryptOptions {
	o := emdl.EncryptOptions{KeyID: "kat-model", KeyVersion: 7, ChunkSize: 64}
	emdl.SetRand(&o, &katRand{})
	return o
}

func readTree(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		b, err := os.ReadFile(p)
		files[filepath.ToSlash(rel)] = b
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

func TestKnownAnswer(t *testing.T) {
	model := filepath.Join(t.TempDir(), "model")
	if _, err := emdl.Encrypt(context.Background(), katKey(), writeTree(t, katPlaintext()), model, katOptions()); err != nil {
		t.Fatal(err)
	}
	got := readTree(t, model)
	if *update {
		if err := os.RemoveAll(katDir); err != nil {
			t.Fatal(err)
		}
		for p, b := range got {
			full := filepath.Join(katDir, filepath.FromSlash(p))
			os.MkdirAll(filepath.Dir(full), 0o755)
			if err := os.WriteFile(full, b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		t.Logf("rewrote %s", katDir)
	}

	want := readTree(t, katDir)
	if len(got) != len(want) {
		t.Errorf("model has %d files, the vector %d", len(got), len(want))
	}
	for p, w := range want {
		if g, ok := got[p]; !ok {
			t.Errorf("%s: missing from the output", p)
		} else if !bytes.Equal(g, w) {
			t.Errorf("%s: differs from the known answer (%d bytes, want %d)\n got %x\nwant %x", p, len(g), len(w), g, w)
		}
	}

	// The committed ciphertext decrypts to the plaintext, under this key only.
	out := filepath.Join(t.TempDir(), "out")
	if _, err := emdl.Decrypt(context.Background(), katKey(), katDir, out, emdl.DecryptOptions{KeyID: "kat-model", KeyVersion: 7}); err != nil {
		t.Fatal(err)
	}
	assertTree(t, out, katPlaintext())
	info, err := emdl.Inspect(katDir)
	if err != nil {
		t.Fatal(err)
	}
	if want := (emdl.Info{KeyID: "kat-model", KeyVersion: 7, Suite: "AES-256-GCM-STREAM", ChunkSize: 64, Files: 3, TotalSize: 229,
		ModelID: "af6fb36a80ce219468e0276b3b98726a"}); info != want {
		t.Errorf("Inspect = %+v\nwant %+v", info, want)
	}
}
