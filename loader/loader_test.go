package loader_test

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cml-project/cml/client"
	"github.com/cml-project/cml/client/clienttest"
	"github.com/cml-project/cml/emdl"
	"github.com/cml-project/cml/identity"
	"github.com/cml-project/cml/loader"
	"github.com/cml-project/cml/server/store"
)

func TestRunIntoAbsentPath(t *testing.T) {
	f := newFixture(t, clienttest.Options{})
	dst := filepath.Join(f.out, "llama")
	sum, err := loader.Run(context.Background(), f.config(t, dst))
	if err != nil {
		t.Fatalf("Run: %v (exit %d)", err, loader.ExitCode(err))
	}
	if loader.ExitCode(err) != loader.ExitOK {
		t.Fatal("exit code of success is not 0")
	}
	f.checkModel(t, dst)
	if got := entries(t, f.out); len(got) != 1 || got[0] != "llama" {
		t.Errorf("beside --dst: %v, want only llama (no partial left)", got)
	}
	if sum.Files != len(plainFiles) || sum.KeyVersion != 1 || sum.KeyID != keyID || sum.RequestID == "" {
		t.Errorf("summary %+v", sum)
	}

	// Exactly one log line: the summary, with every field.
	lines := logLines(t, f.logs)
	if len(lines) != 1 {
		t.Fatalf("%d log lines, want 1:\n%s", len(lines), f.logs)
	}
	l := lines[0]
	if l["msg"] != "model decrypted" || l["level"] != "INFO" {
		t.Errorf("summary line %v", l)
	}
	var total float64
	for _, n := range plainFiles {
		total += float64(n)
	}
	for k, want := range map[string]any{"key": keyID, "key_version": 1.0, "files": float64(len(plainFiles)), "bytes": total, "dst": dst, "src": f.src} {
		if l[k] != want {
			t.Errorf("summary %s = %v, want %v", k, l[k], want)
		}
	}
	for _, k := range []string{"model", "seconds", "throughput_mb_s", "attestation_ms", "request_id", "policy_version"} {
		if _, ok := l[k]; !ok {
			t.Errorf("summary lacks %s", k)
		}
	}
	if strings.Contains(f.logs.String(), hex.EncodeToString(f.dek)) {
		t.Error("the key appears in the log")
	}
}

func TestRunIntoEmptyDirectory(t *testing.T) {
	f := newFixture(t, clienttest.Options{})
	mount := filepath.Join(f.out, "models") // an emptyDir mount point
	if err := os.Mkdir(mount, 0o777); err != nil {
		t.Fatal(err)
	}
	if _, err := loader.Run(context.Background(), f.config(t, mount)); err != nil {
		t.Fatalf("Run: %v", err)
	}
	f.checkModel(t, mount) // no staging directory left either
	if got := entries(t, f.out); len(got) != 1 {
		t.Errorf("outside --dst: %v, want nothing but the mount point", got)
	}
}

func TestRunSingleFileModel(t *testing.T) {
	f := newFixture(t, clienttest.Options{Bufconn: true})
	plain := filepath.Join(t.TempDir(), "model.gguf")
	if err := os.WriteFile(plain, []byte("gguf weights"), 0o644); err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(t.TempDir(), "model.gguf.emdl")
	f.encrypt(t, plain, src, f.dek, 1)

	// An absent --dst becomes the file; an empty directory receives it
	// under its own name.
	for _, tc := range []struct{ dst, file string }{
		{filepath.Join(f.out, "weights.gguf"), filepath.Join(f.out, "weights.gguf")},
		{f.out + "/mnt", filepath.Join(f.out, "mnt", "model.gguf")},
	} {
		if strings.HasSuffix(tc.dst, "mnt") {
			os.Mkdir(tc.dst, 0o755)
		}
		cfg := f.config(t, tc.dst)
		cfg.Src = src
		cfg.DialOptions = f.b.DialOptions()
		if _, err := loader.Run(context.Background(), cfg); err != nil {
			t.Fatalf("Run into %s: %v", tc.dst, err)
		}
		got, err := os.ReadFile(tc.file)
		if err != nil || string(got) != "gguf weights" {
			t.Fatalf("%s: %q %v", tc.file, got, err)
		}
	}
	if got := entries(t, filepath.Join(f.out, "mnt")); len(got) != 1 {
		t.Errorf("mount holds %v, want only model.gguf", got)
	}
}

func TestRunDenied(t *testing.T) {
	f := newFixture(t, clienttest.Options{})
	mount := filepath.Join(f.out, "models")
	os.Mkdir(mount, 0o755)
	cfg := f.config(t, mount)
	cfg.Source = f.b.Source(t, clienttest.OtherID)
	start := time.Now()
	_, err := loader.Run(context.Background(), cfg)
	if code := loader.ExitCode(err); code != loader.ExitDenied {
		t.Fatalf("Run as an identity the policy does not allow: %v, exit %d, want 3", err, code)
	}
	reason, requestID, ok := client.ReasonOf(err)
	if !ok || reason != "spiffe_id_not_allowed" || requestID == "" {
		t.Errorf("ReasonOf = %q %q %v", reason, requestID, ok)
	}
	if time.Since(start) > 10*time.Second {
		t.Error("a denial was retried")
	}
	if got := entries(t, mount); len(got) != 0 {
		t.Errorf("--dst holds %v after a denial, want nothing", got)
	}
}

func TestRunBrokerStartsLater(t *testing.T) {
	f := newFixture(t, clienttest.Options{Deferred: true})
	dst := filepath.Join(f.out, "llama")
	var (
		wg  sync.WaitGroup
		err error
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		_, err = loader.Run(context.Background(), f.config(t, dst))
	}()
	time.Sleep(800 * time.Millisecond)
	f.b.Serve(t)
	wg.Wait()
	if err != nil {
		t.Fatalf("Run with a broker that started late: %v", err)
	}
	f.checkModel(t, dst)
}

func TestRunTimeout(t *testing.T) {
	f := newFixture(t, clienttest.Options{Deferred: true}) // never served
	dst := filepath.Join(f.out, "llama")
	cfg := f.config(t, dst)
	cfg.Timeout = time.Second
	start := time.Now()
	_, err := loader.Run(context.Background(), cfg)
	el := time.Since(start)
	if code := loader.ExitCode(err); code != loader.ExitUnavailable {
		t.Fatalf("Run with no broker: %v, exit %d, want 4", err, code)
	}
	if el < 500*time.Millisecond || el > 10*time.Second {
		t.Errorf("gave up after %s, want about 1s", el)
	}
	if got := entries(t, f.out); len(got) != 0 {
		t.Errorf("wrote %v", got)
	}
}

func TestRunAgentUnavailable(t *testing.T) {
	f := newFixture(t, clienttest.Options{})
	cfg := f.config(t, filepath.Join(f.out, "llama"))
	cfg.Source = nil
	cfg.Identity = identity.Config{Socket: "unix://" + filepath.Join(t.TempDir(), "agent.sock")}
	cfg.Timeout = time.Second
	_, err := loader.Run(context.Background(), cfg)
	if code := loader.ExitCode(err); code != loader.ExitUnavailable {
		t.Fatalf("Run with no SPIRE agent: %v, exit %d, want 4", err, code)
	}
}

func TestRunTamperedModel(t *testing.T) {
	for _, tc := range []struct {
		mode   string
		verify bool
	}{{"absent", false}, {"empty dir", false}, {"absent", true}, {"empty dir", true}} {
		mode := tc.mode
		t.Run(fmt.Sprintf("%s/verify-plaintext-hash=%v", mode, tc.verify), func(t *testing.T) {
			f := newFixture(t, clienttest.Options{})
			p := filepath.Join(f.src, "weights", "model-00001.bin")
			data, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			data[len(data)/2] ^= 1
			if err := os.WriteFile(p, data, 0o644); err != nil {
				t.Fatal(err)
			}
			dst := filepath.Join(f.out, "llama")
			if mode == "empty dir" {
				os.Mkdir(dst, 0o755)
			}
			cfg := f.config(t, dst)
			cfg.VerifyPlaintextHash = tc.verify
			_, err = loader.Run(context.Background(), cfg)
			if code := loader.ExitCode(err); code != loader.ExitBadModel || !errors.Is(err, emdl.ErrTampered) {
				t.Fatalf("Run on a tampered model: %v, exit %d, want 5", err, code)
			}
			// The chunk's authentication refuses it, not the hash.
			if !strings.Contains(err.Error(), "chunk") {
				t.Errorf("error %q does not name the chunk", err)
			}
			if mode == "absent" {
				if got := entries(t, f.out); len(got) != 0 {
					t.Errorf("wrote %v", got)
				}
			} else if got := entries(t, dst); len(got) != 0 {
				t.Errorf("--dst holds %v", got)
			}
		})
	}
}

func TestRunPlaintextHashSetting(t *testing.T) {
	for _, verify := range []bool{false, true} {
		t.Run(fmt.Sprintf("verify-plaintext-hash=%v", verify), func(t *testing.T) {
			f := newFixture(t, clienttest.Options{Bufconn: true})
			dst := filepath.Join(f.out, "llama")
			cfg := f.config(t, dst)
			cfg.DialOptions = f.b.DialOptions()
			cfg.VerifyPlaintextHash = verify
			if _, err := loader.Run(context.Background(), cfg); err != nil {
				t.Fatalf("Run: %v", err)
			}
			f.checkModel(t, dst)
			lines := logLines(t, f.logs)
			if len(lines) != 1 || lines[0]["plaintext_hash_verified"] != verify {
				t.Errorf("summary %v, want plaintext_hash_verified=%v", lines, verify)
			}
		})
	}
}

// TestRunInconsistentHash loads testdata/inconsistent-hash.emdl: every chunk
// authentic, but the manifest's SHA-256 of weights.bin is wrong, as an
// encryptor holding the key but misbehaving would write it (see
// testdata/README.md). Only the optional re-check sees it, which proves the
// setting reaches the decryptor.
func TestRunInconsistentHash(t *testing.T) {
	f := newFixture(t, clienttest.Options{Bufconn: true})
	key := make([]byte, 32)
	for i := range key {
		key[i] = byte(i)
	}
	if _, err := f.b.Store.ImportKey(context.Background(), "inconsistent-hash", key, store.KeyOptions{}); err != nil {
		t.Fatal(err)
	}
	f.b.PutPolicy(t, "inconsistent-hash", f.b.DefaultPolicy())
	config := func(dst string, verify bool) loader.Config {
		cfg := f.config(t, dst)
		cfg.DialOptions = f.b.DialOptions()
		cfg.KeyID = "inconsistent-hash"
		cfg.Src = filepath.Join("testdata", "inconsistent-hash.emdl")
		cfg.VerifyPlaintextHash = verify
		return cfg
	}

	dst := filepath.Join(f.out, "verified")
	_, err := loader.Run(context.Background(), config(dst, true))
	if code := loader.ExitCode(err); code != loader.ExitBadModel || !errors.Is(err, emdl.ErrTampered) || !strings.Contains(err.Error(), "SHA-256") {
		t.Fatalf("Run with VerifyPlaintextHash: %v, exit %d, want 5 naming the SHA-256", err, code)
	}
	if got := entries(t, f.out); len(got) != 0 {
		t.Errorf("wrote %v", got)
	}

	dst = filepath.Join(f.out, "skipped")
	if _, err := loader.Run(context.Background(), config(dst, false)); err != nil {
		t.Fatalf("Run without the re-check: %v", err)
	}
	got, err := os.ReadFile(filepath.Join(dst, "weights.bin"))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 10000 {
		t.Fatalf("weights.bin has %d bytes, want 10000", len(got))
	}
	for i, b := range got {
		if b != byte(i%251) {
			t.Fatalf("weights.bin byte %d is %d, want %d", i, b, i%251)
		}
	}
}

func TestRunKeyMismatch(t *testing.T) {
	f := newFixture(t, clienttest.Options{})
	ctx := context.Background()
	dst := filepath.Join(f.out, "llama")

	cfg := f.config(t, dst)
	cfg.KeyID = "mistral-7b"
	_, err := loader.Run(ctx, cfg)
	if code := loader.ExitCode(err); code != loader.ExitBadModel || !errors.Is(err, loader.ErrKeyMismatch) || !strings.Contains(err.Error(), keyID) {
		t.Fatalf("--key other than the header's: %v, exit %d, want 5", err, code)
	}

	cfg = f.config(t, dst)
	cfg.KeyVersion = 2
	_, err = loader.Run(ctx, cfg)
	if code := loader.ExitCode(err); code != loader.ExitBadModel || !errors.Is(err, loader.ErrKeyMismatch) {
		t.Fatalf("--key-version other than the header's: %v, exit %d, want 5", err, code)
	}

	// The broker's key for the header's id and version does not open the
	// model: a model encrypted with another key under the same name.
	other := make([]byte, 32)
	other[0] = 1
	src2 := filepath.Join(t.TempDir(), "m2.emdl")
	f.encrypt(t, f.plain, src2, other, 1)
	cfg = f.config(t, dst)
	cfg.Src = src2
	_, err = loader.Run(ctx, cfg)
	if code := loader.ExitCode(err); code != loader.ExitBadModel || !errors.Is(err, emdl.ErrWrongKey) {
		t.Fatalf("model encrypted with another key: %v, exit %d, want 5", err, code)
	}
	if got := entries(t, f.out); len(got) != 0 {
		t.Errorf("wrote %v", got)
	}
}

func TestRunAsksForTheHeaderVersion(t *testing.T) {
	f := newFixture(t, clienttest.Options{Bufconn: true})
	v2, dek2 := f.b.RotateKey(t, keyID) // primary is now 2; the model is version 1
	if v2 != 2 {
		t.Fatalf("rotated to version %d", v2)
	}
	dst := filepath.Join(f.out, "v1")
	cfg := f.config(t, dst)
	cfg.DialOptions = f.b.DialOptions()
	sum, err := loader.Run(context.Background(), cfg)
	if err != nil || sum.KeyVersion != 1 {
		t.Fatalf("Run on a version-1 model after rotation: %v (version %d)", err, sum.KeyVersion)
	}
	f.checkModel(t, dst)

	src2 := filepath.Join(t.TempDir(), "v2.emdl")
	f.encrypt(t, f.plain, src2, dek2, 2)
	cfg = f.config(t, filepath.Join(f.out, "v2"))
	cfg.DialOptions = f.b.DialOptions()
	cfg.Src = src2
	cfg.KeyVersion = 2
	if sum, err := loader.Run(context.Background(), cfg); err != nil || sum.KeyVersion != 2 {
		t.Fatalf("Run on a version-2 model: %v", err)
	}
}

func TestRunPostQuantum(t *testing.T) {
	f := newFixture(t, clienttest.Options{Bufconn: true})
	cfg := f.config(t, filepath.Join(f.out, "llama"))
	cfg.DialOptions = f.b.DialOptions()
	cfg.PostQuantum = true
	if _, err := loader.Run(context.Background(), cfg); err != nil {
		t.Fatalf("Run with the post-quantum KEM: %v", err)
	}
}

func TestRunDstRefused(t *testing.T) {
	f := newFixture(t, clienttest.Options{})
	full := filepath.Join(f.out, "full")
	os.Mkdir(full, 0o755)
	os.WriteFile(filepath.Join(full, "keep.txt"), []byte("mine"), 0o644)
	file := filepath.Join(f.out, "file")
	os.WriteFile(file, []byte("x"), 0o644)
	for _, tc := range []struct{ dst, want string }{
		{full, "is not empty"},
		{file, "is not a directory"},
		{filepath.Join(f.out, "no", "parent"), "does not exist"},
	} {
		_, err := loader.Run(context.Background(), f.config(t, tc.dst))
		if code := loader.ExitCode(err); code != loader.ExitUsage || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("--dst %s: %v, exit %d, want 2 and %q", tc.dst, err, code, tc.want)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(full, "keep.txt")); string(b) != "mine" {
		t.Error("an existing file was changed")
	}
	if recs, _ := f.b.Store.ListAudit(context.Background(), auditAll); countOps(recs, "GetChallenge", "ReleaseKey") != 0 {
		t.Error("the broker was asked although --dst was refused")
	}
}

func TestRunUsage(t *testing.T) {
	_, err := loader.Run(context.Background(), loader.Config{})
	var ue *loader.UsageError
	if !errors.As(err, &ue) || loader.ExitCode(err) != loader.ExitUsage {
		t.Fatalf("empty config: %v", err)
	}
	for _, want := range []string{"--kbs", "--kbs-spiffe-id", "--key", "--src", "--dst", "quote provider"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%q does not mention %s", err, want)
		}
	}
	f := newFixture(t, clienttest.Options{Bufconn: true})
	for name, mut := range map[string]func(*loader.Config){
		"no identity": func(c *loader.Config) { c.Source = nil },
		"socket and file": func(c *loader.Config) {
			c.Source = nil
			c.Identity = identity.Config{Socket: "unix:///x", SVIDCert: "c"}
		},
		"two of three files": func(c *loader.Config) {
			c.Source = nil
			c.Identity = identity.Config{SVIDCert: "c", SVIDKey: "k"}
		},
		"negative timeout": func(c *loader.Config) { c.Timeout = -time.Second },
	} {
		cfg := f.config(t, filepath.Join(f.out, "x"))
		mut(&cfg)
		if _, err := loader.Run(context.Background(), cfg); loader.ExitCode(err) != loader.ExitUsage {
			t.Errorf("%s: %v, want a usage error", name, err)
		}
	}
}

func TestRunImpostorBroker(t *testing.T) {
	f := newFixture(t, clienttest.Options{})
	cfg := f.config(t, filepath.Join(f.out, "llama"))
	cfg.KBSID = clienttest.AdminID // the broker presents KBSID, not this
	start := time.Now()
	_, err := loader.Run(context.Background(), cfg)
	if code := loader.ExitCode(err); code != loader.ExitFailure || !errors.Is(err, client.ErrServerIdentity) {
		t.Fatalf("Run against a broker with another SPIFFE ID: %v, exit %d, want 1", err, code)
	}
	if el := time.Since(start); el > 10*time.Second {
		t.Errorf("an impostor was retried for %s", el)
	}
}

func TestExitCode(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want int
	}{
		{nil, 0},
		{errors.New("x"), 1},
		{&loader.UsageError{Msg: "x"}, 2},
		{&client.DeniedError{Reason: "debug_td"}, 3},
		{fmt.Errorf("wrapped: %w", &client.UnavailableError{What: "key broker", Err: errors.New("x")}), 4},
		{status.Error(codes.Unavailable, "x"), 4},
		{fmt.Errorf("%w: x", client.ErrServerIdentity), 1},
		{&emdl.Error{Path: "a", Err: emdl.ErrTruncated}, 5},
		{&emdl.Error{Path: "a", Err: emdl.ErrUnsafePath}, 5},
		{&emdl.Error{Path: "a", Err: emdl.ErrOutputExists}, 1},
		{&emdl.Error{Path: "a", Err: os.ErrPermission}, 1},
		{fmt.Errorf("%w: x", loader.ErrKeyMismatch), 5},
	} {
		if got := loader.ExitCode(tc.err); got != tc.want {
			t.Errorf("ExitCode(%v) = %d, want %d", tc.err, got, tc.want)
		}
	}
}
