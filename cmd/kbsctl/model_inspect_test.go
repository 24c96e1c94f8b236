package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

func TestModelInspectText(t *testing.T) {
	_, _, enc := encryptedModel(t)
	r := kbsctl(t, "model", "inspect", enc)
	if r.code != exitOK || r.stderr != "" {
		t.Fatalf("inspect: %v", r)
	}
	for _, re := range []string{
		`(?m)^model: +` + regexp.QuoteMeta(enc) + `$`,
		`(?m)^key id: +llama$`,
		`(?m)^key version: +2$`,
		`(?m)^suite: +\S+`,
		`(?m)^chunk size: +4\.0 KiB \(4096 bytes\)$`,
		`(?m)^layout: +directory, 5 files$`,
		`(?m)^plaintext: +423\.3 KiB \(433496 bytes\)$`,
		`(?m)^model id: +[0-9a-f]{32}$`,
	} {
		if !regexp.MustCompile(re).MatchString(r.stdout) {
			t.Errorf("inspect output lacks %s:\n%s", re, r.stdout)
		}
	}
}

func TestModelInspectJSON(t *testing.T) {
	_, _, enc := encryptedModel(t)
	// --json after the positional argument, and before it.
	for _, args := range [][]string{{"model", "inspect", enc, "--json"}, {"model", "inspect", "--json", enc}} {
		r := kbsctl(t, args...)
		if r.code != exitOK || r.stderr != "" {
			t.Fatalf("inspect --json: %v", r)
		}
		var got map[string]any
		if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
			t.Fatalf("inspect --json is not JSON: %v\n%s", err, r.stdout)
		}
		want := map[string]any{
			"path": enc, "key_id": "llama", "key_version": 2.0, "chunk_size": 4096.0,
			"single_file": false, "files": 5.0, "total_size": 433496.0,
		}
		for k, v := range want {
			if got[k] != v {
				t.Errorf("%s = %v, want %v", k, got[k], v)
			}
		}
		if s, _ := got["suite"].(string); s != "AES-256-GCM-STREAM" {
			t.Errorf("suite = %v", got["suite"])
		}
		if id, _ := got["model_id"].(string); !regexp.MustCompile(`^[0-9a-f]{32}$`).MatchString(id) {
			t.Errorf("model_id = %v", got["model_id"])
		}
		if len(got) != len(want)+2 {
			t.Errorf("unexpected fields: %v", got)
		}
	}
}

func TestModelInspectSingleFile(t *testing.T) {
	key := newKey(t)
	src := filepath.Join(t.TempDir(), "model.gguf")
	if err := os.WriteFile(src, pseudoRandom(4, 5000), 0o644); err != nil {
		t.Fatal(err)
	}
	enc := filepath.Join(t.TempDir(), "enc")
	if r := kbsctl(t, "model", "encrypt", "--key-file", key, "--key-id", "g", "--in", src, "--out", enc); r.code != exitOK {
		t.Fatalf("encrypt: %v", r)
	}
	r := kbsctl(t, "model", "inspect", enc)
	if r.code != exitOK || !regexp.MustCompile(`(?m)^layout: +single file$`).MatchString(r.stdout) ||
		!strings.Contains(r.stdout, "(5000 bytes)") || !strings.Contains(r.stdout, "1.0 MiB (1048576 bytes)") {
		t.Errorf("inspect of a single-file model: %v", r)
	}
}

func TestModelInspectErrors(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing")
	if r := kbsctl(t, "model", "inspect", missing); r.code == exitOK || !strings.HasPrefix(r.stderr, "kbsctl: inspect "+missing+": ") {
		t.Errorf("inspect of a missing directory: %v", r)
	}
	empty := t.TempDir()
	if r := kbsctl(t, "model", "inspect", empty, "--json"); r.code == exitOK || r.stdout != "" || !strings.HasPrefix(r.stderr, "kbsctl: inspect "+empty+": ") {
		t.Errorf("inspect of an empty directory: %v", r)
	}
}
