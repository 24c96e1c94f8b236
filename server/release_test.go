package server_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"

	"github.com/cml-project/cml/keyrelease"
	kbsv1 "github.com/cml-project/cml/proto/cml/kbs/v1"
	"github.com/cml-project/cml/server/audit"
	"github.com/cml-project/cml/tdx/collateral"
	"github.com/cml-project/cml/tdx/tdxsim"
)

func TestReleaseAllow(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.createKey("llama", e.defaultPolicy())
	kb := e.broker(loaderID)
	var secrets [][]byte
	for _, kem := range []keyrelease.KEM{keyrelease.KEMX25519, keyrelease.KEMMLKEM768X25519} {
		t.Run(kem.String(), func(t *testing.T) {
			r, err := e.release(kb, attempt{keyID: "llama", kem: kem})
			if err != nil {
				t.Fatal(err)
			}
			got := open(t, r)
			want := e.dek("llama", 1)
			if !bytes.Equal(got, want) {
				t.Fatal("released key differs from the stored DEK")
			}
			secrets = append(secrets, want, r.nonce)
			resp := r.resp
			if resp.KeyId != "llama" || resp.KeyVersion != 1 || resp.PolicyVersion != 1 ||
				resp.Algorithm != kbsv1.KeyAlgorithm_KEY_ALGORITHM_AES_256_GCM || len(resp.RequestId) != 16 ||
				resp.SealedKey.KemId != kbsv1.HpkeKem(kem) || resp.SealedKey.KdfId != kbsv1.HpkeKdf_HPKE_KDF_HKDF_SHA256 ||
				resp.SealedKey.AeadId != kbsv1.HpkeAead_HPKE_AEAD_AES_256_GCM {
				t.Errorf("response = %v", resp)
			}
			rec := e.recordFor(resp.RequestId)
			d := e.sim.DefaultTD()
			if rec.Decision != audit.Allow || rec.Operation != "ReleaseKey" || rec.Caller != loaderID.String() ||
				rec.KeyID != "llama" || rec.KeyVersion != 1 || rec.PolicyVersion != 1 || !rec.Simulated ||
				rec.Measurements["mrtd"] != hex.EncodeToString(d.MRTD[:]) || rec.NonceDigest != audit.Digest(r.nonce) ||
				len(rec.QuoteDigest) != 64 || rec.Details["kem"] != kem.String() || rec.Details["tcb_status"] != "UpToDate" {
				t.Errorf("audit record = %+v", rec)
			}
		})
	}

	// A rotated key: version 0 releases the new primary, an explicit version the old one.
	if _, err := e.admin().RotateKey(context.Background(), &kbsv1.RotateKeyRequest{KeyId: "llama"}); err != nil {
		t.Fatal(err)
	}
	for _, v := range []uint32{0, 1, 2} {
		r, err := e.release(kb, attempt{keyID: "llama", version: v})
		if err != nil {
			t.Fatalf("version %d: %v", v, err)
		}
		want := v
		if v == 0 {
			want = 2
		}
		if r.resp.KeyVersion != want || !bytes.Equal(open(t, r), e.dek("llama", want)) {
			t.Errorf("version %d: released version %d", v, r.resp.KeyVersion)
		}
		secrets = append(secrets, e.dek("llama", want), r.nonce)
	}
	e.checkNoSecrets(secrets...)
	if _, err := e.st.VerifyAudit(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestNoClientCertificate(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.createKey("k", e.defaultPolicy())
	before := len(e.records())
	// A TLS client that presents no certificate: the handshake fails.
	c, err := grpc.NewClient(e.addr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
		InsecureSkipVerify: true, // the test is about the server refusing us
		MinVersion:         tls.VersionTLS13,
	})))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = kbsv1.NewKeyBrokerServiceClient(c).GetChallenge(ctx, &kbsv1.GetChallengeRequest{KeyId: "k"})
	if !isCode(err, codes.Unavailable) {
		t.Fatalf("err = %v, want Unavailable (handshake failure)", err)
	}
	if len(e.records()) != before {
		t.Error("a call without a certificate reached a handler")
	}
	// Another trust domain's SVID fails the handshake too.
	other, err := newForeignConn(t, e)
	if err != nil {
		t.Fatal(err)
	}
	_, err = kbsv1.NewKeyBrokerServiceClient(other).GetChallenge(ctx, &kbsv1.GetChallengeRequest{KeyId: "k"})
	if !isCode(err, codes.Unavailable) {
		t.Fatalf("foreign trust domain: err = %v, want Unavailable", err)
	}
}

func TestDenySPIFFEID(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.createKey("k", e.defaultPolicy())
	e.createKey("no-policy", nil)
	kb := e.broker(evilID)
	for _, tc := range []struct {
		key, auditReason string
	}{
		{"k", "spiffe_id_not_allowed"},
		{"missing", "key_not_found"},
		{"no-policy", "no_policy"},
	} {
		_, err := kb.GetChallenge(context.Background(), &kbsv1.GetChallengeRequest{KeyId: tc.key})
		// The caller learns nothing about the key: always spiffe_id_not_allowed.
		d := wantDenied(t, err, codes.PermissionDenied, "spiffe_id_not_allowed")
		rec := e.recordFor(d.RequestId)
		if rec.Decision != audit.Deny || !slices.Equal(rec.Reasons, []string{tc.auditReason}) || rec.Operation != "GetChallenge" || rec.KeyID != tc.key {
			t.Errorf("%s: audit record = %+v", tc.key, rec)
		}
	}
	// A loader named by the policy still cannot release a key with no policy.
	_, err := e.broker(loaderID).GetChallenge(context.Background(), &kbsv1.GetChallengeRequest{KeyId: "no-policy"})
	wantDenied(t, err, codes.PermissionDenied, "spiffe_id_not_allowed")
	// Malformed key id.
	_, err = kb.GetChallenge(context.Background(), &kbsv1.GetChallengeRequest{KeyId: "a b"})
	wantDenied(t, err, codes.InvalidArgument, "invalid_argument")

	// The policy changed between challenge and release: the caller is no
	// longer named and ReleaseKey's own check refuses.
	lb := e.broker(loaderID)
	ch, err := lb.GetChallenge(context.Background(), &kbsv1.GetChallengeRequest{KeyId: "k"})
	if err != nil {
		t.Fatal(err)
	}
	p := e.defaultPolicy()
	p.SpiffeIds = []string{"spiffe://example.org/ns/other/*"}
	if _, err := e.admin().PutPolicy(context.Background(), &kbsv1.PutPolicyRequest{KeyId: "k", Policy: p}); err != nil {
		t.Fatal(err)
	}
	_, err = e.release(lb, attempt{keyID: "k", nonce: ch.Nonce})
	d := wantDenied(t, err, codes.PermissionDenied, "spiffe_id_not_allowed")
	if rec := e.recordFor(d.RequestId); rec.PolicyVersion != 2 || rec.Operation != "ReleaseKey" {
		t.Errorf("audit record = %+v", rec)
	}
}

func TestDenyNonce(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.createKey("a", e.defaultPolicy())
	e.createKey("b", e.defaultPolicy())
	kb, kb2 := e.broker(loaderID), e.broker(loader2ID)
	ctx := context.Background()
	challenge := func(c kbsv1.KeyBrokerServiceClient, key string) []byte {
		t.Helper()
		ch, err := c.GetChallenge(ctx, &kbsv1.GetChallengeRequest{KeyId: key})
		if err != nil {
			t.Fatal(err)
		}
		if len(ch.Nonce) != 32 || !ch.ExpireTime.AsTime().Equal(e.clock.Now().Add(60*time.Second)) {
			t.Fatalf("challenge = %v", ch)
		}
		return ch.Nonce
	}

	t.Run("unknown", func(t *testing.T) {
		_, err := e.release(kb, attempt{keyID: "a", nonce: bytes.Repeat([]byte{7}, 32)})
		wantDenied(t, err, codes.PermissionDenied, "nonce_unknown")
	})
	t.Run("expired", func(t *testing.T) {
		n := challenge(kb, "a")
		e.clock.Advance(61 * time.Second)
		_, err := e.release(kb, attempt{keyID: "a", nonce: n})
		wantDenied(t, err, codes.PermissionDenied, "nonce_expired")
		// Presenting it again is still refused.
		_, err = e.release(kb, attempt{keyID: "a", nonce: n})
		wantDenied(t, err, codes.PermissionDenied, "nonce_expired")
	})
	t.Run("expired at exactly the TTL is still valid", func(t *testing.T) {
		n := challenge(kb, "a")
		e.clock.Advance(60 * time.Second)
		if _, err := e.release(kb, attempt{keyID: "a", nonce: n}); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("reused", func(t *testing.T) {
		n := challenge(kb, "a")
		if _, err := e.release(kb, attempt{keyID: "a", nonce: n}); err != nil {
			t.Fatal(err)
		}
		_, err := e.release(kb, attempt{keyID: "a", nonce: n})
		wantDenied(t, err, codes.PermissionDenied, "nonce_reused")
	})
	t.Run("other caller", func(t *testing.T) {
		n := challenge(kb, "a")
		_, err := e.release(kb2, attempt{keyID: "a", nonce: n})
		wantDenied(t, err, codes.PermissionDenied, "nonce_wrong_caller")
		// The nonce is burnt: its owner cannot use it either.
		_, err = e.release(kb, attempt{keyID: "a", nonce: n})
		wantDenied(t, err, codes.PermissionDenied, "nonce_reused")
	})
	t.Run("other key", func(t *testing.T) {
		n := challenge(kb, "a")
		_, err := e.release(kb, attempt{keyID: "b", nonce: n})
		wantDenied(t, err, codes.PermissionDenied, "nonce_wrong_key")
	})
	t.Run("malformed nonce does not burn", func(t *testing.T) {
		_, err := e.release(kb, attempt{keyID: "a", nonce: []byte{1, 2, 3}})
		wantDenied(t, err, codes.InvalidArgument, "invalid_argument")
	})
	t.Run("report data", func(t *testing.T) {
		_, pub, _ := keyrelease.GenerateKey(keyrelease.KEMX25519)
		_, err := e.release(kb, attempt{keyID: "a", rdPub: pub}) // quote binds another key
		d := wantDenied(t, err, codes.PermissionDenied, "report_data_mismatch")
		if rec := e.recordFor(d.RequestId); rec.Measurements["mrtd"] == "" || rec.NonceDigest == "" {
			t.Errorf("audit record lacks what was seen: %+v", rec)
		}
		// A quote over the right key but another nonce.
		n1, n2 := challenge(kb, "a"), challenge(kb, "a")
		_, pub, _ = keyrelease.GenerateKey(keyrelease.KEMX25519)
		q, err := e.sim.Quote(keyrelease.ReportData(n1, keyrelease.KEMX25519, pub), e.sim.DefaultTD())
		if err != nil {
			t.Fatal(err)
		}
		_, err = kb.ReleaseKey(ctx, &kbsv1.ReleaseKeyRequest{KeyId: "a", Nonce: n2, Quote: q, KemId: x25519, TeePublicKey: pub})
		wantDenied(t, err, codes.PermissionDenied, "report_data_mismatch")
	})
}

func TestDenyVerification(t *testing.T) {
	expired := tdxsim.Options{ValidityOverride: map[collateral.Kind]time.Duration{collateral.KindTCBInfo: -time.Minute}}
	for _, tc := range []struct {
		name    string
		opts    envOptions
		tamper  func([]byte) []byte
		allowOD bool
		reason  string
	}{
		{name: "bad signature", tamper: func(q []byte) []byte { q[0x27C+5] ^= 1; return q }, reason: "quote_signature_invalid"},
		{name: "body tampered", tamper: func(q []byte) []byte { q[0x30+0x88] ^= 1; return q }, reason: "quote_signature_invalid"},
		{name: "malformed", tamper: func(q []byte) []byte { return q[:0x100] }, reason: "quote_malformed"},
		{name: "untrusted root", opts: envOptions{noSimRoot: true}, reason: "pck_chain_untrusted"},
		{name: "revoked PCK", opts: envOptions{sim: tdxsim.Options{RevokePCK: true}}, reason: "pck_revoked"},
		{name: "expired collateral", opts: envOptions{sim: expired}, reason: "collateral_expired"},
		{name: "TCB out of date", opts: envOptions{sim: tdxsim.Options{TCBStatus: tdxsim.OutOfDate}}, reason: "tcb_out_of_date"},
		{name: "TCB out of date, allowed by policy", opts: envOptions{sim: tdxsim.Options{TCBStatus: tdxsim.OutOfDate}}, allowOD: true},
		{name: "TCB revoked, listed statuses cannot help", opts: envOptions{sim: tdxsim.Options{TCBStatus: tdxsim.Revoked}}, allowOD: true, reason: "tcb_revoked"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, tc.opts)
			p := e.defaultPolicy()
			if tc.allowOD {
				p.AllowedTcbStatus = []string{"UpToDate", "OutOfDate"}
			}
			e.createKey("k", p)
			kb := e.broker(loaderID)
			a := attempt{keyID: "k"}
			if tc.tamper != nil {
				ch, err := kb.GetChallenge(context.Background(), &kbsv1.GetChallengeRequest{KeyId: "k"})
				if err != nil {
					t.Fatal(err)
				}
				_, pub, _ := keyrelease.GenerateKey(keyrelease.KEMX25519)
				q, err := e.sim.Quote(keyrelease.ReportData(ch.Nonce, keyrelease.KEMX25519, pub), e.sim.DefaultTD())
				if err != nil {
					t.Fatal(err)
				}
				a.nonce, a.quote = ch.Nonce, tc.tamper(q)
			}
			r, err := e.release(kb, a)
			if tc.reason == "" {
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(open(t, r), e.dek("k", 1)) {
					t.Fatal("wrong key")
				}
				rec := e.recordFor(r.resp.RequestId)
				if rec.Details["tcb_status"] != "OutOfDate" || rec.Details["verifier_reason"] != "tcb_out_of_date" {
					t.Errorf("audit record = %+v", rec)
				}
				return
			}
			d := wantDenied(t, err, codes.PermissionDenied, tc.reason)
			rec := e.recordFor(d.RequestId)
			if rec.Decision != audit.Deny || rec.Reasons[0] != tc.reason || rec.QuoteDigest == "" {
				t.Errorf("audit record = %+v", rec)
			}
			if tc.opts.noSimRoot && rec.Simulated {
				t.Error("record marked simulated without the simulator root")
			}
		})
	}
}

func TestDenyPolicy(t *testing.T) {
	e := newEnv(t, envOptions{})
	kb := e.broker(loaderID)
	def := e.sim.DefaultTD()
	mod := func(f func(*tdxsim.TDParams)) tdxsim.TDParams {
		d := def
		f(&d)
		return d
	}
	for i, tc := range []struct {
		name    string
		policy  func(*kbsv1.Policy)
		td      tdxsim.TDParams
		kem     keyrelease.KEM
		reasons []string
	}{
		{name: "mrtd", td: mod(func(d *tdxsim.TDParams) { d.MRTD[0] ^= 1 }), reasons: []string{"mrtd_not_allowed"}},
		{name: "rtmr1", td: mod(func(d *tdxsim.TDParams) { d.RTMR[1][5] ^= 1 }), reasons: []string{"rtmr1_not_allowed"}},
		{name: "rtmr2 and debug", td: mod(func(d *tdxsim.TDParams) { d.RTMR[2][5] ^= 1; d.Debug = true }), reasons: []string{"rtmr2_not_allowed", "debug_td"}},
		{name: "debug", td: mod(func(d *tdxsim.TDParams) { d.Debug = true }), reasons: []string{"debug_td"}},
		{name: "debug allowed", policy: func(p *kbsv1.Policy) { p.AllowDebug = true }, td: mod(func(d *tdxsim.TDParams) { d.Debug = true })},
		{name: "tcb status not allowed", policy: func(p *kbsv1.Policy) { p.AllowedTcbStatus = []string{"OutOfDate"} }, reasons: []string{"tcb_status_not_allowed"}},
		{name: "tee tcb svn too low", policy: func(p *kbsv1.Policy) { p.MinTeeTcbSvn = strings.Repeat("ff", 16) }, reasons: []string{"tee_tcb_svn_too_low"}},
		{name: "suite weaker than required", policy: func(p *kbsv1.Policy) { p.AllowedKemIds = []kbsv1.HpkeKem{mlkem} }, reasons: []string{"kem_not_allowed"}},
		{name: "post-quantum as required", policy: func(p *kbsv1.Policy) { p.AllowedKemIds = []kbsv1.HpkeKem{mlkem} }, kem: keyrelease.KEMMLKEM768X25519},
	} {
		t.Run(tc.name, func(t *testing.T) {
			key := "k" + string(rune('a'+i))
			p := e.defaultPolicy()
			if tc.policy != nil {
				tc.policy(p)
			}
			e.createKey(key, p)
			r, err := e.release(kb, attempt{keyID: key, td: tc.td, kem: tc.kem})
			if tc.reasons == nil {
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(open(t, r), e.dek(key, 1)) {
					t.Fatal("wrong key")
				}
				return
			}
			d := wantDenied(t, err, codes.PermissionDenied, tc.reasons[0])
			rec := e.recordFor(d.RequestId)
			if !slices.Equal(rec.Reasons, tc.reasons) || rec.PolicyVersion != 1 {
				t.Errorf("audit reasons = %v, want %v (record %+v)", rec.Reasons, tc.reasons, rec)
			}
		})
	}
}

func TestDenyKeyState(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx := context.Background()
	a := e.admin()
	kb := e.broker(loaderID)
	e.createKey("k", e.defaultPolicy())
	if _, err := a.RotateKey(ctx, &kbsv1.RotateKeyRequest{KeyId: "k"}); err != nil {
		t.Fatal(err)
	}

	// One version disabled.
	if _, err := a.DisableKey(ctx, &kbsv1.DisableKeyRequest{KeyId: "k", Version: 1}); err != nil {
		t.Fatal(err)
	}
	_, err := e.release(kb, attempt{keyID: "k", version: 1})
	wantDenied(t, err, codes.PermissionDenied, "key_disabled")
	if _, err := e.release(kb, attempt{keyID: "k", version: 2}); err != nil {
		t.Fatalf("enabled version: %v", err)
	}
	// A version that does not exist.
	_, err = e.release(kb, attempt{keyID: "k", version: 9})
	wantDenied(t, err, codes.PermissionDenied, "key_version_not_found")

	// The whole key disabled, then enabled.
	if _, err := a.DisableKey(ctx, &kbsv1.DisableKeyRequest{KeyId: "k", WholeKey: true}); err != nil {
		t.Fatal(err)
	}
	_, err = e.release(kb, attempt{keyID: "k"})
	wantDenied(t, err, codes.PermissionDenied, "key_disabled")
	if _, err := a.EnableKey(ctx, &kbsv1.EnableKeyRequest{KeyId: "k", WholeKey: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.release(kb, attempt{keyID: "k"}); err != nil {
		t.Fatalf("re-enabled: %v", err)
	}

	// Destroyed.
	if _, err := a.DestroyKey(ctx, &kbsv1.DestroyKeyRequest{KeyId: "k", WholeKey: true}); err != nil {
		t.Fatal(err)
	}
	_, err = e.release(kb, attempt{keyID: "k"})
	d := wantDenied(t, err, codes.PermissionDenied, "key_destroyed")
	if rec := e.recordFor(d.RequestId); rec.PolicyVersion != 1 || rec.Reasons[0] != "key_destroyed" {
		t.Errorf("audit record = %+v", rec)
	}
}

func TestRequestLimits(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.createKey("k", e.defaultPolicy())
	kb := e.broker(loaderID)
	ctx := context.Background()
	ch, err := kb.GetChallenge(ctx, &kbsv1.GetChallengeRequest{KeyId: "k"})
	if err != nil {
		t.Fatal(err)
	}
	_, pub, _ := keyrelease.GenerateKey(keyrelease.KEMX25519)

	// Within the message limit but above the quote limit: our own check,
	// with a reason code and an audit record.
	_, err = kb.ReleaseKey(ctx, &kbsv1.ReleaseKeyRequest{KeyId: "k", Nonce: ch.Nonce, Quote: make([]byte, 100<<10), KemId: x25519, TeePublicKey: pub})
	d := wantDenied(t, err, codes.ResourceExhausted, "request_too_large")
	if rec := e.recordFor(d.RequestId); rec.Decision != audit.Deny || rec.KeyID != "" && rec.KeyID != "k" {
		t.Errorf("audit record = %+v", rec)
	}
	// Above the message limit: gRPC refuses it before any handler.
	before := len(e.records())
	_, err = kb.ReleaseKey(ctx, &kbsv1.ReleaseKeyRequest{KeyId: "k", Nonce: ch.Nonce, Quote: make([]byte, 300<<10), KemId: x25519, TeePublicKey: pub})
	if !isCode(err, codes.ResourceExhausted) {
		t.Fatalf("err = %v, want ResourceExhausted", err)
	}
	if len(e.records()) != before {
		t.Error("an oversized message reached a handler")
	}
	// The nonce survived both: malformed and oversized requests do not burn it.
	if _, err := e.release(kb, attempt{keyID: "k", nonce: ch.Nonce}); err != nil {
		t.Fatalf("nonce burnt by an oversized request: %v", err)
	}

	// Other malformed fields.
	for name, req := range map[string]*kbsv1.ReleaseKeyRequest{
		"unknown kem":     {KeyId: "k", Nonce: make([]byte, 32), Quote: []byte{1}, KemId: 0x10, TeePublicKey: make([]byte, 65)},
		"short key":       {KeyId: "k", Nonce: make([]byte, 32), Quote: []byte{1}, KemId: x25519, TeePublicKey: make([]byte, 31)},
		"mlkem key size":  {KeyId: "k", Nonce: make([]byte, 32), Quote: []byte{1}, KemId: mlkem, TeePublicKey: pub},
		"no quote":        {KeyId: "k", Nonce: make([]byte, 32), KemId: x25519, TeePublicKey: pub},
		"bad key id":      {KeyId: "../k", Nonce: make([]byte, 32), Quote: []byte{1}, KemId: x25519, TeePublicKey: pub},
		"empty key id":    {Nonce: make([]byte, 32), Quote: []byte{1}, KemId: x25519, TeePublicKey: pub},
		"huge public key": {KeyId: "k", Nonce: make([]byte, 32), Quote: []byte{1}, KemId: x25519, TeePublicKey: make([]byte, 5000)},
	} {
		_, err := kb.ReleaseKey(ctx, req)
		want, code := "invalid_argument", codes.InvalidArgument
		if name == "huge public key" {
			want, code = "request_too_large", codes.ResourceExhausted
		}
		t.Run(name, func(t *testing.T) { wantDenied(t, err, code, want) })
	}
}

func TestChallengeBounds(t *testing.T) {
	e := newEnv(t, envOptions{maxPer: 3, maxTotal: 5})
	e.createKey("k", e.defaultPolicy())
	ctx := context.Background()
	kb, kb2 := e.broker(loaderID), e.broker(loader2ID)
	get := func(c kbsv1.KeyBrokerServiceClient) ([]byte, error) {
		ch, err := c.GetChallenge(ctx, &kbsv1.GetChallengeRequest{KeyId: "k"})
		return ch.GetNonce(), err
	}
	var nonces [][]byte
	for range 3 {
		n, err := get(kb)
		if err != nil {
			t.Fatal(err)
		}
		nonces = append(nonces, n)
	}
	_, err := get(kb)
	d := wantDenied(t, err, codes.ResourceExhausted, "too_many_challenges")
	if rec := e.recordFor(d.RequestId); rec.Reasons[0] != "too_many_challenges" {
		t.Errorf("audit record = %+v", rec)
	}
	// Another caller has its own allowance, up to the total.
	for range 2 {
		if _, err := get(kb2); err != nil {
			t.Fatal(err)
		}
	}
	_, err = get(kb2)
	wantDenied(t, err, codes.ResourceExhausted, "too_many_challenges")
	// Consuming one frees a slot; the outstanding ones stay valid.
	if _, err := e.release(kb, attempt{keyID: "k", nonce: nonces[0]}); err != nil {
		t.Fatal(err)
	}
	if _, err := get(kb); err != nil {
		t.Fatalf("after consuming: %v", err)
	}
	// Expiry frees everything.
	e.clock.Advance(61 * time.Second)
	for range 3 {
		if _, err := get(kb); err != nil {
			t.Fatalf("after expiry: %v", err)
		}
	}
	// An outstanding nonce is never evicted to make room.
	_, err = e.release(kb, attempt{keyID: "k", nonce: nonces[1]})
	wantDenied(t, err, codes.PermissionDenied, "nonce_expired")
}

func TestConcurrentReleases(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.createKey("k", e.defaultPolicy())
	want := e.dek("k", 1)
	kb := e.broker(loaderID)
	const n = 8
	errs := make(chan error, n)
	for range n {
		go func() {
			r, err := e.release(kb, attempt{keyID: "k"})
			if err == nil {
				sk := r.resp.GetSealedKey()
				var got []byte
				got, err = keyrelease.Open(r.priv, keyrelease.ReleaseInfo("k", 1, r.nonce), sk.GetEnc(), sk.GetCiphertext())
				if err == nil && !bytes.Equal(got, want) {
					err = errors.New("released key differs")
				}
			}
			errs <- err
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	if _, err := e.st.VerifyAudit(context.Background()); err != nil {
		t.Fatal(err)
	}
}
