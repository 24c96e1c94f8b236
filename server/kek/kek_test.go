package kek

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func testKey() []byte {
	k := make([]byte, Size)
	for i := range k {
		k[i] = byte(0xA0 + i)
	}
	return k
}

func TestSealOpenRoundTripAndAAD(t *testing.T) {
	ctx := context.Background()
	p, err := New(testKey())
	if err != nil {
		t.Fatal(err)
	}
	pt := []byte("data encryption key 32 bytes....")
	sealed, err := p.Seal(ctx, pt, []byte("aad-1"))
	if err != nil {
		t.Fatal(err)
	}
	if len(sealed) != len(pt)+12+16 {
		t.Fatalf("sealed length %d, want %d", len(sealed), len(pt)+28)
	}
	if bytes.Contains(sealed, pt) {
		t.Fatal("sealed value contains the plaintext")
	}
	got, err := p.Open(ctx, sealed, []byte("aad-1"))
	if err != nil || !bytes.Equal(got, pt) {
		t.Fatalf("Open = %q, %v", got, err)
	}
	// Two seals of the same plaintext differ (random nonce).
	again, _ := p.Seal(ctx, pt, []byte("aad-1"))
	if bytes.Equal(again, sealed) {
		t.Fatal("two seals are identical; nonce is not random")
	}
	if _, err := p.Open(ctx, sealed, []byte("aad-2")); !errors.Is(err, ErrAuth) {
		t.Fatalf("Open with other AAD: %v, want ErrAuth", err)
	}
	for i := range sealed {
		bad := bytes.Clone(sealed)
		bad[i] ^= 1
		if _, err := p.Open(ctx, bad, []byte("aad-1")); !errors.Is(err, ErrAuth) {
			t.Fatalf("Open with byte %d flipped: %v, want ErrAuth", i, err)
		}
	}
	if _, err := p.Open(ctx, sealed[:10], nil); !errors.Is(err, ErrAuth) {
		t.Fatalf("Open short: %v", err)
	}
	other, _ := New(bytes.Repeat([]byte{1}, Size))
	if _, err := other.Open(ctx, sealed, []byte("aad-1")); !errors.Is(err, ErrAuth) {
		t.Fatalf("Open with other KEK: %v, want ErrAuth", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := p.Seal(cctx, pt, nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("Seal with cancelled ctx: %v", err)
	}
}

func TestNewRejectsWrongSize(t *testing.T) {
	for _, n := range []int{0, 16, 31, 33, 64} {
		if _, err := New(make([]byte, n)); err == nil {
			t.Errorf("New(%d bytes) succeeded", n)
		}
	}
}

func TestStringRedacts(t *testing.T) {
	k := testKey()
	p, _ := New(k)
	for _, s := range []string{fmt.Sprint(p), fmt.Sprintf("%v %+v %#v %s", p, p, p, p)} {
		if strings.Contains(strings.ToLower(s), hex.EncodeToString(k)) || strings.Contains(s, string(k)) {
			t.Fatalf("formatted provider leaks key: %q", s)
		}
	}
}

func TestParseKey(t *testing.T) {
	k := testKey()
	lower := hex.EncodeToString(k)
	upper := strings.ToUpper(lower)
	for _, in := range []string{lower, upper, lower + "\n", upper + "\r\n"} {
		got, err := ParseKey([]byte(in))
		if err != nil || !bytes.Equal(got, k) {
			t.Errorf("ParseKey(%q) = %x, %v", in, got, err)
		}
	}
	for _, in := range []string{"", lower[:62], lower + "00", lower + "\n\n", " " + lower, lower + " ",
		"zz" + lower[2:], lower + "\r", string(k)} {
		_, err := ParseKey([]byte(in))
		if err == nil {
			t.Errorf("ParseKey(%q) succeeded", in)
			continue
		}
		if strings.Contains(err.Error(), lower[4:20]) {
			t.Errorf("error echoes input: %v", err)
		}
	}
}

func TestInitAndLoadFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "kek.hex")
	if err := Init(path); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, want 0600", fi.Mode().Perm())
	}
	text, _ := os.ReadFile(path)
	if len(text) != 65 || text[64] != '\n' {
		t.Fatalf("file is %d bytes, want 64 hex + newline", len(text))
	}
	key, err := ParseKey(text)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(key, make([]byte, Size)) {
		t.Fatal("KEK is all zero")
	}
	p, err := LoadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// The loaded provider opens what a provider built from the same bytes sealed.
	ref, _ := New(key)
	sealed, _ := ref.Seal(context.Background(), []byte("x"), nil)
	if _, err := p.Open(context.Background(), sealed, nil); err != nil {
		t.Fatalf("loaded KEK differs from file content: %v", err)
	}

	// Init refuses to overwrite, and leaves the existing file untouched.
	err = Init(path)
	if !errors.Is(err, fs.ErrExist) {
		t.Fatalf("second Init: %v, want ErrExist", err)
	}
	after, _ := os.ReadFile(path)
	if !bytes.Equal(after, text) {
		t.Fatal("second Init changed the KEK file")
	}
	// Two Inits produce different keys.
	path2 := filepath.Join(dir, "kek2.hex")
	if err := Init(path2); err != nil {
		t.Fatal(err)
	}
	text2, _ := os.ReadFile(path2)
	if bytes.Equal(text, text2) {
		t.Fatal("two KEKs are equal")
	}
}

func TestInitMissingDir(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nope", "kek.hex")
	if err := Init(path); err == nil {
		t.Fatal("Init in missing directory succeeded")
	}
}

func TestLoadFileRefusals(t *testing.T) {
	dir := t.TempDir()
	good := FormatKey(testKey())
	write := func(name string, data []byte, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		name string
		path string
		want []string
	}{
		{"world readable", write("w", good, 0o644), []string{"0644", "chmod 600", filepath.Join(dir, "w")}},
		{"group readable", write("g", good, 0o640), []string{"0640", "chmod 600"}},
		{"group writable", write("gw", good, 0o620), []string{"chmod 600"}},
		{"too long", write("long", append(bytes.Clone(good), "00000000"...), 0o600), []string{filepath.Join(dir, "long"), "bytes"}},
		{"too short", write("short", good[:40], 0o600), []string{filepath.Join(dir, "short"), "64 hex digits"}},
		{"not hex", write("nothex", bytes.Repeat([]byte("g"), 64), 0o600), []string{"not hexadecimal"}},
		{"raw bytes", write("raw", testKey(), 0o600), []string{filepath.Join(dir, "raw")}},
		{"missing", filepath.Join(dir, "missing"), []string{filepath.Join(dir, "missing")}},
		{"directory", dir, []string{"not a regular file"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := LoadFile(tt.path)
			if err == nil {
				t.Fatal("LoadFile succeeded")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
			if strings.Contains(err.Error(), string(good[:20])) {
				t.Errorf("error echoes key: %q", err)
			}
		})
	}
	// 0400 is fine.
	if _, err := LoadFile(write("ro", good, 0o400)); err != nil {
		t.Fatalf("mode 0400 refused: %v", err)
	}
}

func TestLoadEnv(t *testing.T) {
	good := hex.EncodeToString(testKey())
	env := map[string]string{}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	if _, err := LoadEnv(lookup); !errors.Is(err, ErrNotSet) || !strings.Contains(err.Error(), EnvVar) {
		t.Fatalf("unset: %v", err)
	}
	env[EnvVar] = "short"
	if _, err := LoadEnv(lookup); err == nil || !strings.Contains(err.Error(), EnvVar) {
		t.Fatalf("bad value: %v", err)
	}
	env[EnvVar] = good
	p, err := LoadEnv(lookup)
	if err != nil {
		t.Fatal(err)
	}
	ref, _ := New(testKey())
	sealed, _ := p.Seal(context.Background(), []byte("x"), []byte("a"))
	if _, err := ref.Open(context.Background(), sealed, []byte("a")); err != nil {
		t.Fatalf("env KEK differs: %v", err)
	}
}

func FuzzParseKey(f *testing.F) {
	f.Add([]byte(hex.EncodeToString(testKey())))
	f.Add([]byte(hex.EncodeToString(testKey()) + "\n"))
	f.Add([]byte(hex.EncodeToString(testKey()) + "\r\n"))
	f.Add([]byte("not a key"))
	f.Fuzz(func(t *testing.T, in []byte) {
		key, err := ParseKey(in)
		if err != nil {
			if key != nil {
				t.Fatal("key returned with error")
			}
			return
		}
		if len(key) != Size {
			t.Fatalf("key of %d bytes", len(key))
		}
		// Whatever parsed must be the hex of the first 64 bytes.
		if !strings.EqualFold(hex.EncodeToString(key), string(in[:64])) {
			t.Fatal("key does not match its text")
		}
		again, err := ParseKey(FormatKey(key))
		if err != nil || !bytes.Equal(again, key) {
			t.Fatal("FormatKey does not round-trip")
		}
	})
}
