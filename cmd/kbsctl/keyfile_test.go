package main

import (
	"bytes"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const testKeyHex = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"

func TestParseKey(t *testing.T) {
	want, _ := hex.DecodeString(testKeyHex)
	for _, ok := range []string{
		testKeyHex,
		testKeyHex + "\n",
		testKeyHex + "\r\n",
		testKeyHex + " \t\n\n",
		strings.ToUpper(testKeyHex),
	} {
		key, err := parseKey([]byte(ok))
		if err != nil || !bytes.Equal(key, want) {
			t.Errorf("parseKey(%q) = %x, %v", ok, key, err)
		}
	}
	for _, tc := range []struct{ in, msg string }{
		{"", "the file is empty"},
		{"\n\n", "the file is empty"},
		{testKeyHex[:62], "found 62 characters before the trailing whitespace, want 64"},
		{testKeyHex + "00", "found 66 characters"},
		{" " + testKeyHex, "character 1 is not a hex digit"},
		{"\n" + testKeyHex, "character 1 is not a hex digit"},
		{testKeyHex[:10] + "g" + testKeyHex[11:], "character 11 is not a hex digit"},
		{testKeyHex[:32] + "\n" + testKeyHex[32:], "character 33 is not a hex digit"},
		{"0x" + testKeyHex[2:], "character 2 is not a hex digit"},
		{"-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQ\n", "character 1 is not a hex digit"},
		{strings.Repeat("0", 64), "the key is all zeros"},
		{hex.EncodeToString(want[:16]) + "\n" + hex.EncodeToString(want[16:]), "character 33"},
	} {
		key, err := parseKey([]byte(tc.in))
		if err == nil {
			t.Errorf("parseKey(%q) accepted: %x", tc.in, key)
			continue
		}
		if !errors.Is(err, errNotKey) || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("parseKey(%q) = %v, want %q", tc.in, err, tc.msg)
		}
	}
}

// FuzzParseKey checks that parseKey never panics, that what it accepts is
// exactly 64 hex digits plus trailing whitespace, and that its errors never
// quote the input.
func FuzzParseKey(f *testing.F) {
	f.Add([]byte(testKeyHex + "\n"))
	f.Add([]byte(strings.ToUpper(testKeyHex)))
	f.Add([]byte(testKeyHex[:63] + "x"))
	f.Add([]byte("secret-password\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		key, err := parseKey(data)
		if err != nil {
			if key != nil {
				t.Fatal("key returned with an error")
			}
			trimmed := strings.TrimRight(string(data), " \t\r\n")
			if len(trimmed) >= 8 && strings.Contains(err.Error(), trimmed) {
				t.Fatalf("error quotes the input: %v", err)
			}
			return
		}
		if len(key) != 32 {
			t.Fatalf("key of %d bytes", len(key))
		}
		text := strings.TrimRight(string(data), " \t\r\n")
		if !strings.EqualFold(text, hex.EncodeToString(key)) {
			t.Fatalf("accepted %q as %x", data, key)
		}
	})
}

func writeFile(t *testing.T, path, content string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil { // umask
		t.Fatal(err)
	}
}

func TestReadKeyFile(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.key")
	writeFile(t, good, testKeyHex+"\n", 0o600)
	var warn bytes.Buffer
	key, err := readKeyFile("--key-file", good, &warn)
	if err != nil || hex.EncodeToString(key) != testKeyHex {
		t.Fatalf("readKeyFile: %x, %v", key, err)
	}
	if warn.Len() != 0 {
		t.Errorf("warning for a 0600 key file: %s", warn.String())
	}

	open := filepath.Join(dir, "open.key")
	writeFile(t, open, testKeyHex, 0o644)
	warn.Reset()
	if _, err := readKeyFile("--key-file", open, &warn); err != nil {
		t.Fatal(err)
	}
	if want := "kbsctl: warning: key file " + open + " is readable by group or others (mode 0644); restrict it with 'chmod 600 " + open + "'\n"; warn.String() != want {
		t.Errorf("warning:\n got %q\nwant %q", warn.String(), want)
	}

	secret := "hunter2-this-is-my-password"
	pw := filepath.Join(dir, "password.txt")
	writeFile(t, pw, secret+"\n", 0o600)
	big := filepath.Join(dir, "big.bin")
	writeFile(t, big, strings.Repeat("a", 2000), 0o600)
	for _, tc := range []struct{ path, msg string }{
		{filepath.Join(dir, "missing.key"), "--key-file " + filepath.Join(dir, "missing.key") + ": no such file; create a key with 'kbsctl model keygen"},
		{dir, "--key-file " + dir + ": not a regular file; a key file holds exactly 64 hex digits"},
		{big, "--key-file " + big + ": 2000 bytes is too large"},
		{pw, "--key-file " + pw + ": not a key: character 1 is not a hex digit; a key file holds exactly 64 hex digits (a 256-bit key) and an optional newline, as written by 'kbsctl model keygen FILE'"},
	} {
		_, err := readKeyFile("--key-file", tc.path, &warn)
		if err == nil || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("readKeyFile(%s) = %v, want %q", tc.path, err, tc.msg)
		}
		if err != nil && strings.Contains(err.Error(), secret) {
			t.Errorf("error echoes the file content: %v", err)
		}
	}
}
