package server_test

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/cml-project/cml/keyrelease"
	kbsv1 "github.com/cml-project/cml/proto/cml/kbs/v1"
	"github.com/cml-project/cml/server/audit"
	"github.com/cml-project/cml/server/authz"
	"github.com/cml-project/cml/tdx/tdxsim"
)

func TestAdminKeys(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx := context.Background()
	a := e.admin()

	// CreateKey.
	ck, err := a.CreateKey(ctx, &kbsv1.CreateKeyRequest{KeyId: "gen", Description: "generated", Labels: map[string]string{"team": "ml"}})
	if err != nil {
		t.Fatal(err)
	}
	k := ck.Key
	if k.KeyId != "gen" || k.State != kbsv1.KeyState_KEY_STATE_ENABLED || k.PrimaryVersion != 1 || len(k.Versions) != 1 ||
		k.Versions[0].Origin != kbsv1.KeyOrigin_KEY_ORIGIN_GENERATED || k.Description != "generated" || k.Labels["team"] != "ml" ||
		k.Algorithm != kbsv1.KeyAlgorithm_KEY_ALGORITHM_AES_256_GCM || k.PolicyVersion != 0 || k.CreateTime == nil {
		t.Errorf("created = %v", k)
	}
	_, err = a.CreateKey(ctx, &kbsv1.CreateKeyRequest{KeyId: "gen"})
	wantDenied(t, err, codes.AlreadyExists, "key_exists")
	_, err = a.CreateKey(ctx, &kbsv1.CreateKeyRequest{KeyId: "bad id"})
	wantDenied(t, err, codes.InvalidArgument, "invalid_argument")
	_, err = a.CreateKey(ctx, &kbsv1.CreateKeyRequest{KeyId: "x", Algorithm: 7})
	wantDenied(t, err, codes.InvalidArgument, "invalid_argument")
	_, err = a.CreateKey(ctx, &kbsv1.CreateKeyRequest{KeyId: "x", Labels: map[string]string{"BAD": "x"}})
	wantDenied(t, err, codes.InvalidArgument, "invalid_argument")

	// ImportKey: a new key, then a new version.
	material := bytes.Repeat([]byte{0x42}, 32)
	ik, err := a.ImportKey(ctx, &kbsv1.ImportKeyRequest{KeyId: "imp", KeyMaterial: bytes.Clone(material)})
	if err != nil {
		t.Fatal(err)
	}
	if ik.Version != 1 || ik.Key.Versions[0].Origin != kbsv1.KeyOrigin_KEY_ORIGIN_IMPORTED || !bytes.Equal(e.dek("imp", 1), material) {
		t.Errorf("imported = %v", ik)
	}
	material2 := bytes.Repeat([]byte{0x43}, 32)
	ik, err = a.ImportKey(ctx, &kbsv1.ImportKeyRequest{KeyId: "imp", KeyMaterial: bytes.Clone(material2), NewVersion: true})
	if err != nil {
		t.Fatal(err)
	}
	if ik.Version != 2 || ik.Key.PrimaryVersion != 2 || !bytes.Equal(e.dek("imp", 2), material2) {
		t.Errorf("imported version = %v", ik)
	}
	for name, req := range map[string]*kbsv1.ImportKeyRequest{
		"short":             {KeyId: "imp2", KeyMaterial: make([]byte, 16)},
		"zero":              {KeyId: "imp2", KeyMaterial: make([]byte, 32)},
		"labels on version": {KeyId: "imp", KeyMaterial: material, NewVersion: true, Description: "x"},
	} {
		_, err := a.ImportKey(ctx, req)
		t.Run("import "+name, func(t *testing.T) { wantDenied(t, err, codes.InvalidArgument, "invalid_argument") })
	}
	_, err = a.ImportKey(ctx, &kbsv1.ImportKeyRequest{KeyId: "missing", KeyMaterial: material, NewVersion: true})
	wantDenied(t, err, codes.NotFound, "key_not_found")
	_, err = a.ImportKey(ctx, &kbsv1.ImportKeyRequest{KeyId: "imp", KeyMaterial: material})
	wantDenied(t, err, codes.AlreadyExists, "key_exists")

	// RotateKey.
	rk, err := a.RotateKey(ctx, &kbsv1.RotateKeyRequest{KeyId: "gen"})
	if err != nil || rk.NewVersion != 2 || rk.Key.PrimaryVersion != 2 || len(rk.Key.Versions) != 2 {
		t.Fatalf("rotate = %v, %v", rk, err)
	}
	_, err = a.RotateKey(ctx, &kbsv1.RotateKeyRequest{KeyId: "missing"})
	wantDenied(t, err, codes.NotFound, "key_not_found")

	// GetKey.
	gk, err := a.GetKey(ctx, &kbsv1.GetKeyRequest{KeyId: "gen"})
	if err != nil || gk.Key.PrimaryVersion != 2 {
		t.Fatalf("get = %v, %v", gk, err)
	}
	_, err = a.GetKey(ctx, &kbsv1.GetKeyRequest{KeyId: "missing"})
	wantDenied(t, err, codes.NotFound, "key_not_found")

	// Disable / Enable one version and the whole key.
	dk, err := a.DisableKey(ctx, &kbsv1.DisableKeyRequest{KeyId: "gen", Version: 1})
	if err != nil || dk.Key.Versions[0].State != kbsv1.KeyVersionState_KEY_VERSION_STATE_DISABLED || dk.Key.State != kbsv1.KeyState_KEY_STATE_ENABLED {
		t.Fatalf("disable version = %v, %v", dk, err)
	}
	ek, err := a.EnableKey(ctx, &kbsv1.EnableKeyRequest{KeyId: "gen", Version: 1})
	if err != nil || ek.Key.Versions[0].State != kbsv1.KeyVersionState_KEY_VERSION_STATE_ENABLED {
		t.Fatalf("enable version = %v, %v", ek, err)
	}
	dk, err = a.DisableKey(ctx, &kbsv1.DisableKeyRequest{KeyId: "gen", WholeKey: true})
	if err != nil || dk.Key.State != kbsv1.KeyState_KEY_STATE_DISABLED {
		t.Fatalf("disable key = %v, %v", dk, err)
	}
	ek, err = a.EnableKey(ctx, &kbsv1.EnableKeyRequest{KeyId: "gen", WholeKey: true})
	if err != nil || ek.Key.State != kbsv1.KeyState_KEY_STATE_ENABLED {
		t.Fatalf("enable key = %v, %v", ek, err)
	}
	for _, req := range []*kbsv1.DisableKeyRequest{{KeyId: "gen"}, {KeyId: "gen", Version: 1, WholeKey: true}} {
		_, err := a.DisableKey(ctx, req)
		wantDenied(t, err, codes.InvalidArgument, "invalid_argument")
	}
	_, err = a.DisableKey(ctx, &kbsv1.DisableKeyRequest{KeyId: "gen", Version: 9})
	wantDenied(t, err, codes.NotFound, "key_version_not_found")

	// ExportKey: sealed to the admin's key with the export info.
	for _, kem := range []keyrelease.KEM{keyrelease.KEMX25519, keyrelease.KEMMLKEM768X25519} {
		priv, pub, _ := keyrelease.GenerateKey(kem)
		ex, err := a.ExportKey(ctx, &kbsv1.ExportKeyRequest{KeyId: "imp", KeyVersion: 1, KemId: kbsv1.HpkeKem(kem), PublicKey: pub})
		if err != nil {
			t.Fatal(err)
		}
		got, err := keyrelease.Open(priv, keyrelease.ExportInfo("imp", 1), ex.SealedKey.Enc, ex.SealedKey.Ciphertext)
		if err != nil || !bytes.Equal(got, material) || ex.KeyVersion != 1 || len(ex.RequestId) != 16 {
			t.Fatalf("export %s: %v %v", kem, ex, err)
		}
		// The release info does not open an export.
		if _, err := keyrelease.Open(priv, keyrelease.ReleaseInfo("imp", 1, nil), ex.SealedKey.Enc, ex.SealedKey.Ciphertext); err == nil {
			t.Error("an export opens with a release info")
		}
		rec := e.recordFor(ex.RequestId)
		if rec.Operation != "ExportKey" || rec.Decision != audit.Allow || rec.KeyVersion != 1 || rec.Caller != adminID.String() {
			t.Errorf("export audit record = %+v", rec)
		}
	}
	_, pub, _ := keyrelease.GenerateKey(keyrelease.KEMX25519)
	ex, err := a.ExportKey(ctx, &kbsv1.ExportKeyRequest{KeyId: "imp", KemId: x25519, PublicKey: pub})
	if err != nil || ex.KeyVersion != 2 {
		t.Fatalf("export primary = %v, %v", ex, err)
	}
	if _, err := a.DisableKey(ctx, &kbsv1.DisableKeyRequest{KeyId: "imp", Version: 1}); err != nil {
		t.Fatal(err)
	}
	_, err = a.ExportKey(ctx, &kbsv1.ExportKeyRequest{KeyId: "imp", KeyVersion: 1, KemId: x25519, PublicKey: pub})
	wantDenied(t, err, codes.FailedPrecondition, "key_disabled")
	_, err = a.ExportKey(ctx, &kbsv1.ExportKeyRequest{KeyId: "imp", KemId: x25519, PublicKey: pub[:5]})
	wantDenied(t, err, codes.InvalidArgument, "invalid_argument")

	// DestroyKey: one version (TestAdminDestroyVersion has the details),
	// then the whole key.
	if dv, err := a.DestroyKey(ctx, &kbsv1.DestroyKeyRequest{KeyId: "gen", Version: 1}); err != nil ||
		dv.Key.Versions[0].State != kbsv1.KeyVersionState_KEY_VERSION_STATE_DESTROYED || dv.Key.State != kbsv1.KeyState_KEY_STATE_ENABLED {
		t.Fatalf("destroy version = %v, %v", dv, err)
	}
	ds, err := a.DestroyKey(ctx, &kbsv1.DestroyKeyRequest{KeyId: "gen", WholeKey: true})
	if err != nil || ds.Key.State != kbsv1.KeyState_KEY_STATE_DESTROYED || ds.Key.DestroyTime == nil ||
		ds.Key.Versions[0].State != kbsv1.KeyVersionState_KEY_VERSION_STATE_DESTROYED {
		t.Fatalf("destroy = %v, %v", ds, err)
	}
	_, err = a.CreateKey(ctx, &kbsv1.CreateKeyRequest{KeyId: "gen"})
	wantDenied(t, err, codes.FailedPrecondition, "key_destroyed")
	_, err = a.ExportKey(ctx, &kbsv1.ExportKeyRequest{KeyId: "gen", KemId: x25519, PublicKey: pub})
	wantDenied(t, err, codes.FailedPrecondition, "key_destroyed")
	_, err = a.RotateKey(ctx, &kbsv1.RotateKeyRequest{KeyId: "gen"})
	wantDenied(t, err, codes.FailedPrecondition, "key_destroyed")

	e.checkNoSecrets(material, material2, e.dek("imp", 2))
}

func TestAdminListKeysPaging(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx := context.Background()
	a := e.admin()
	var want []string
	for i := range 7 {
		id := fmt.Sprintf("key-%02d", i)
		want = append(want, id)
		if _, err := a.CreateKey(ctx, &kbsv1.CreateKeyRequest{KeyId: id}); err != nil {
			t.Fatal(err)
		}
	}
	var got []string
	tok := ""
	pages := 0
	for {
		resp, err := a.ListKeys(ctx, &kbsv1.ListKeysRequest{PageSize: 3, PageToken: tok})
		if err != nil {
			t.Fatal(err)
		}
		pages++
		for _, k := range resp.Keys {
			got = append(got, k.KeyId)
		}
		if tok = resp.NextPageToken; tok == "" {
			break
		}
	}
	if !slices.Equal(got, want) || pages != 3 {
		t.Errorf("listed %v in %d pages", got, pages)
	}
	// An exact multiple of the page size has no empty last page.
	resp, err := a.ListKeys(ctx, &kbsv1.ListKeysRequest{PageSize: 7})
	if err != nil || len(resp.Keys) != 7 || resp.NextPageToken != "" {
		t.Errorf("page of 7 = %d keys, token %q, %v", len(resp.GetKeys()), resp.GetNextPageToken(), err)
	}
	_, err = a.ListKeys(ctx, &kbsv1.ListKeysRequest{PageSize: -1})
	wantDenied(t, err, codes.InvalidArgument, "invalid_argument")
	_, err = a.ListKeys(ctx, &kbsv1.ListKeysRequest{PageToken: "!!"})
	wantDenied(t, err, codes.InvalidArgument, "invalid_argument")
}

func TestAdminPolicies(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx := context.Background()
	a := e.admin()
	e.createKey("k", nil)

	// PutPolicy: normalised, versioned, created_by from the certificate.
	p := e.defaultPolicy()
	p.Mrtd[0] = strings.ToUpper(p.Mrtd[0])
	p.CreatedBy = "spiffe://example.org/forged" // output only: ignored
	pp, err := a.PutPolicy(ctx, &kbsv1.PutPolicyRequest{KeyId: "k", Policy: p})
	if err != nil {
		t.Fatal(err)
	}
	got := pp.Policy
	if got.Version != 1 || got.KeyId != "k" || got.CreatedBy != adminID.String() || got.CreateTime == nil || got.Mrtd[0] != strings.ToLower(p.Mrtd[0]) {
		t.Errorf("stored policy = %v", got)
	}
	rec := e.records()
	last := rec[len(rec)-1]
	if last.Operation != "PutPolicy" || last.PolicyVersion != 1 || last.Decision != audit.Allow {
		t.Errorf("audit record = %+v", last)
	}
	if _, err := a.PutPolicy(ctx, &kbsv1.PutPolicyRequest{KeyId: "k", Policy: e.defaultPolicy()}); err != nil {
		t.Fatal(err)
	}

	// Invalid policies: every problem in the message.
	_, err = a.PutPolicy(ctx, &kbsv1.PutPolicyRequest{KeyId: "k", Policy: &kbsv1.Policy{Mrtd: []string{"00"}, AllowedTcbStatus: []string{"Revoked"}}})
	wantDenied(t, err, codes.InvalidArgument, "invalid_argument")
	msg := status.Convert(err).Message()
	for _, want := range []string{"spiffe_ids", "mrtd[0]", "allowed_tcb_status[0]"} {
		if !strings.Contains(msg, want) {
			t.Errorf("message %q does not name %s", msg, want)
		}
	}
	_, err = a.PutPolicy(ctx, &kbsv1.PutPolicyRequest{KeyId: "k"})
	wantDenied(t, err, codes.InvalidArgument, "invalid_argument")
	_, err = a.PutPolicy(ctx, &kbsv1.PutPolicyRequest{KeyId: "missing", Policy: e.defaultPolicy()})
	wantDenied(t, err, codes.NotFound, "key_not_found")

	// GetPolicy.
	gp, err := a.GetPolicy(ctx, &kbsv1.GetPolicyRequest{KeyId: "k"})
	if err != nil || gp.Policy.Version != 2 {
		t.Fatalf("current policy = %v, %v", gp, err)
	}
	gp, err = a.GetPolicy(ctx, &kbsv1.GetPolicyRequest{KeyId: "k", Version: 1})
	if err != nil || gp.Policy.Version != 1 || gp.Policy.CreatedBy != adminID.String() {
		t.Fatalf("policy v1 = %v, %v", gp, err)
	}
	_, err = a.GetPolicy(ctx, &kbsv1.GetPolicyRequest{KeyId: "k", Version: 3})
	wantDenied(t, err, codes.NotFound, "no_policy")
	e.createKey("bare", nil)
	_, err = a.GetPolicy(ctx, &kbsv1.GetPolicyRequest{KeyId: "bare"})
	wantDenied(t, err, codes.NotFound, "no_policy")

	// ListPolicies of one key: newest first, paged.
	for range 3 {
		if _, err := a.PutPolicy(ctx, &kbsv1.PutPolicyRequest{KeyId: "k", Policy: e.defaultPolicy()}); err != nil {
			t.Fatal(err)
		}
	}
	var versions []uint32
	tok := ""
	for {
		lp, err := a.ListPolicies(ctx, &kbsv1.ListPoliciesRequest{KeyId: "k", PageSize: 2, PageToken: tok})
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range lp.Policies {
			versions = append(versions, p.Version)
		}
		if tok = lp.NextPageToken; tok == "" {
			break
		}
	}
	if !slices.Equal(versions, []uint32{5, 4, 3, 2, 1}) {
		t.Errorf("versions = %v", versions)
	}
	// A token of one listing is refused by another.
	lp, _ := a.ListPolicies(ctx, &kbsv1.ListPoliciesRequest{KeyId: "k", PageSize: 1})
	_, err = a.ListPolicies(ctx, &kbsv1.ListPoliciesRequest{PageToken: lp.NextPageToken})
	wantDenied(t, err, codes.InvalidArgument, "invalid_argument")
	_, err = a.ListPolicies(ctx, &kbsv1.ListPoliciesRequest{KeyId: "missing"})
	wantDenied(t, err, codes.NotFound, "key_not_found")

	// ListPolicies of every key: current versions, by key id, keys without a policy skipped.
	e.createKey("a-first", e.defaultPolicy())
	var keys []string
	tok = ""
	for {
		lp, err := a.ListPolicies(ctx, &kbsv1.ListPoliciesRequest{PageSize: 1, PageToken: tok})
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range lp.Policies {
			keys = append(keys, fmt.Sprintf("%s@%d", p.KeyId, p.Version))
		}
		if tok = lp.NextPageToken; tok == "" {
			break
		}
	}
	if !slices.Equal(keys, []string{"a-first@1", "k@5"}) {
		t.Errorf("current policies = %v", keys)
	}
}

func TestAdminTestPolicy(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx := context.Background()
	a := e.admin()
	e.createKey("k", e.defaultPolicy())
	q, err := e.sim.Quote([64]byte{1}, e.sim.DefaultTD())
	if err != nil {
		t.Fatal(err)
	}

	// Stored policy, allowed.
	tp, err := a.TestPolicy(ctx, &kbsv1.TestPolicyRequest{KeyId: "k", Quote: q, SpiffeId: loaderID.String(), KemId: x25519})
	if err != nil {
		t.Fatal(err)
	}
	if tp.Decision != kbsv1.Decision_DECISION_ALLOW || len(tp.ReasonCodes) != 0 || tp.PolicyVersion != 1 || !tp.Simulated ||
		tp.TdClaims.GetTcbStatus() != "UpToDate" || len(tp.Checks) != 15 {
		t.Errorf("test policy = %v", tp)
	}

	// A debug TD with another MRTD, tested by a caller the policy does not name, with X25519 where ML-KEM is required.
	dbg := e.sim.DefaultTD()
	dbg.Debug = true
	dbg.MRTD[3] ^= 1
	q2, err := e.sim.Quote([64]byte{2}, dbg)
	if err != nil {
		t.Fatal(err)
	}
	draft := e.defaultPolicy()
	draft.AllowedKemIds = []kbsv1.HpkeKem{mlkem}
	tp, err = a.TestPolicy(ctx, &kbsv1.TestPolicyRequest{Policy: draft, Quote: q2, SpiffeId: evilID.String(), KemId: x25519})
	if err != nil {
		t.Fatal(err)
	}
	if tp.Decision != kbsv1.Decision_DECISION_DENY || tp.PolicyVersion != 0 ||
		!slices.Equal(tp.ReasonCodes, []string{"spiffe_id_not_allowed", "mrtd_not_allowed", "debug_td", "kem_not_allowed"}) {
		t.Errorf("draft test = %v", tp)
	}
	for _, c := range tp.Checks {
		if c.Name == "mrtd" && (c.Passed || c.Actual != hex32(dbg.MRTD[:]) || c.Expected != draft.Mrtd[0]) {
			t.Errorf("mrtd check = %v", c)
		}
	}

	// A quote that does not verify is a failed "quote" check, not an error.
	bad := bytes.Clone(q)
	bad[0x27C+5] ^= 1
	tp, err = a.TestPolicy(ctx, &kbsv1.TestPolicyRequest{KeyId: "k", Quote: bad, SpiffeId: loaderID.String()})
	if err != nil {
		t.Fatal(err)
	}
	if tp.Decision != kbsv1.Decision_DECISION_DENY || tp.Checks[0].Name != "quote" || tp.Checks[0].ReasonCode != "quote_signature_invalid" || tp.TdClaims != nil {
		t.Errorf("bad quote test = %v", tp)
	}

	// An auditor may run it too; each run is audited as an allowed dry run.
	au := kbsv1.NewAdminServiceClient(e.conn(auditorID))
	if _, err := au.TestPolicy(ctx, &kbsv1.TestPolicyRequest{KeyId: "k", Quote: q, SpiffeId: loaderID.String()}); err != nil {
		t.Fatal(err)
	}
	recs := e.records()
	last := recs[len(recs)-1]
	if last.Operation != "TestPolicy" || last.Caller != auditorID.String() || last.Decision != audit.Allow ||
		last.Details["dry_run_decision"] != "allow" || last.QuoteDigest != audit.Digest(q) || last.Measurements["mrtd"] == "" {
		t.Errorf("audit record = %+v", last)
	}

	// Malformed requests.
	for name, req := range map[string]*kbsv1.TestPolicyRequest{
		"both":          {KeyId: "k", Policy: draft, Quote: q, SpiffeId: loaderID.String()},
		"neither":       {Quote: q, SpiffeId: loaderID.String()},
		"draft version": {Policy: draft, PolicyVersion: 1, Quote: q, SpiffeId: loaderID.String()},
		"no spiffe id":  {KeyId: "k", Quote: q},
		"bad spiffe id": {KeyId: "k", Quote: q, SpiffeId: "https://x"},
		"no quote":      {KeyId: "k", SpiffeId: loaderID.String()},
		"bad draft":     {Policy: &kbsv1.Policy{}, Quote: q, SpiffeId: loaderID.String()},
	} {
		_, err := a.TestPolicy(ctx, req)
		t.Run(name, func(t *testing.T) { wantDenied(t, err, codes.InvalidArgument, "invalid_argument") })
	}
	_, err = a.TestPolicy(ctx, &kbsv1.TestPolicyRequest{KeyId: "k", PolicyVersion: 9, Quote: q, SpiffeId: loaderID.String()})
	wantDenied(t, err, codes.NotFound, "no_policy")
}

func TestAdminTestPolicyOutOfDate(t *testing.T) {
	e := newEnv(t, envOptions{sim: tdxsim.Options{TCBStatus: tdxsim.OutOfDate}})
	q, err := e.sim.Quote([64]byte{}, e.sim.DefaultTD())
	if err != nil {
		t.Fatal(err)
	}
	p := e.defaultPolicy()
	tp, err := e.admin().TestPolicy(context.Background(), &kbsv1.TestPolicyRequest{Policy: p, Quote: q, SpiffeId: loaderID.String()})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(tp.ReasonCodes, []string{"tcb_out_of_date"}) || tp.TdClaims.GetTcbStatus() != "OutOfDate" {
		t.Errorf("out of date = %v", tp)
	}
	p.AllowedTcbStatus = []string{"OutOfDate"}
	tp, err = e.admin().TestPolicy(context.Background(), &kbsv1.TestPolicyRequest{Policy: p, Quote: q, SpiffeId: loaderID.String()})
	if err != nil || tp.Decision != kbsv1.Decision_DECISION_ALLOW {
		t.Errorf("out of date allowed = %v, %v", tp, err)
	}
}

func hex32(b []byte) string { return fmt.Sprintf("%x", b) }

func TestAdminAuditLog(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx := context.Background()
	a := e.admin()
	e.createKey("k", e.defaultPolicy())
	e.createKey("other", nil)
	kb := e.broker(loaderID)
	for range 3 {
		if _, err := e.release(kb, attempt{keyID: "k"}); err != nil {
			t.Fatal(err)
		}
	}
	_, err := e.release(kb, attempt{keyID: "k", nonce: make([]byte, 32)})
	wantDenied(t, err, codes.PermissionDenied, "nonce_unknown")

	// Filter by key and decision, paged.
	var seqs []uint64
	tok := ""
	for {
		resp, err := a.ListAuditRecords(ctx, &kbsv1.ListAuditRecordsRequest{KeyId: "k", Decision: kbsv1.Decision_DECISION_ALLOW, PageSize: 2, PageToken: tok})
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range resp.Records {
			if r.KeyId != "k" || r.Decision != kbsv1.Decision_DECISION_ALLOW || len(r.RecordHash) != 64 || len(r.PrevHash) != 64 {
				t.Errorf("record = %v", r)
			}
			seqs = append(seqs, r.Sequence)
		}
		if tok = resp.NextPageToken; tok == "" {
			break
		}
	}
	// CreateKey, PutPolicy, 3 releases.
	if len(seqs) != 5 || !slices.IsSorted(seqs) {
		t.Errorf("allowed records of k = %v", seqs)
	}
	resp, err := a.ListAuditRecords(ctx, &kbsv1.ListAuditRecordsRequest{Decision: kbsv1.Decision_DECISION_DENY})
	if err != nil || len(resp.Records) != 1 || resp.Records[0].ReasonCodes[0] != "nonce_unknown" {
		t.Fatalf("denials = %v, %v", resp, err)
	}
	// Time window: everything happened at the pinned clock.
	now := e.clock.Now()
	resp, err = a.ListAuditRecords(ctx, &kbsv1.ListAuditRecordsRequest{EndTime: timestamppb.New(now)})
	if err != nil || len(resp.Records) != 0 {
		t.Errorf("before now = %v, %v", resp, err)
	}

	v, err := a.VerifyAuditLog(ctx, &kbsv1.VerifyAuditLogRequest{})
	if err != nil || !v.Ok || v.RecordsChecked == 0 || v.HeadSequence != v.RecordsChecked || len(v.HeadHash) != 64 || v.FirstTime == nil {
		t.Fatalf("verify = %v, %v", v, err)
	}
	au := kbsv1.NewAdminServiceClient(e.conn(auditorID))
	if v, err := au.VerifyAuditLog(ctx, &kbsv1.VerifyAuditLogRequest{}); err != nil || !v.Ok {
		t.Fatalf("auditor verify = %v, %v", v, err)
	}
	_, err = a.ListAuditRecords(ctx, &kbsv1.ListAuditRecordsRequest{Decision: 9})
	wantDenied(t, err, codes.InvalidArgument, "invalid_argument")
}

// TestAuthorization: a loader cannot call any admin RPC, an auditor only the
// read-only ones; each refusal is audited.
func TestAuthorization(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx := context.Background()
	e.createKey("k", e.defaultPolicy())
	loader := kbsv1.NewAdminServiceClient(e.conn(loaderID))
	auditor := kbsv1.NewAdminServiceClient(e.conn(auditorID))
	calls := map[string]func(kbsv1.AdminServiceClient) error{
		"CreateKey": func(c kbsv1.AdminServiceClient) error {
			_, err := c.CreateKey(ctx, &kbsv1.CreateKeyRequest{KeyId: "new"})
			return err
		},
		"ImportKey": func(c kbsv1.AdminServiceClient) error {
			_, err := c.ImportKey(ctx, &kbsv1.ImportKeyRequest{KeyId: "new", KeyMaterial: bytes.Repeat([]byte{1}, 32)})
			return err
		},
		"RotateKey": func(c kbsv1.AdminServiceClient) error {
			_, err := c.RotateKey(ctx, &kbsv1.RotateKeyRequest{KeyId: "k"})
			return err
		},
		"GetKey": func(c kbsv1.AdminServiceClient) error {
			_, err := c.GetKey(ctx, &kbsv1.GetKeyRequest{KeyId: "k"})
			return err
		},
		"ListKeys": func(c kbsv1.AdminServiceClient) error {
			_, err := c.ListKeys(ctx, &kbsv1.ListKeysRequest{})
			return err
		},
		"DisableKey": func(c kbsv1.AdminServiceClient) error {
			_, err := c.DisableKey(ctx, &kbsv1.DisableKeyRequest{KeyId: "k", WholeKey: true})
			return err
		},
		"EnableKey": func(c kbsv1.AdminServiceClient) error {
			_, err := c.EnableKey(ctx, &kbsv1.EnableKeyRequest{KeyId: "k", WholeKey: true})
			return err
		},
		"DestroyKey": func(c kbsv1.AdminServiceClient) error {
			_, err := c.DestroyKey(ctx, &kbsv1.DestroyKeyRequest{KeyId: "k", WholeKey: true})
			return err
		},
		"PutPolicy": func(c kbsv1.AdminServiceClient) error {
			_, err := c.PutPolicy(ctx, &kbsv1.PutPolicyRequest{KeyId: "k", Policy: e.defaultPolicy()})
			return err
		},
		"GetPolicy": func(c kbsv1.AdminServiceClient) error {
			_, err := c.GetPolicy(ctx, &kbsv1.GetPolicyRequest{KeyId: "k"})
			return err
		},
		"ListPolicies": func(c kbsv1.AdminServiceClient) error {
			_, err := c.ListPolicies(ctx, &kbsv1.ListPoliciesRequest{})
			return err
		},
		"TestPolicy": func(c kbsv1.AdminServiceClient) error {
			q, _ := e.sim.Quote([64]byte{}, e.sim.DefaultTD())
			_, err := c.TestPolicy(ctx, &kbsv1.TestPolicyRequest{KeyId: "k", Quote: q, SpiffeId: loaderID.String()})
			return err
		},
		"ListAuditRecords": func(c kbsv1.AdminServiceClient) error {
			_, err := c.ListAuditRecords(ctx, &kbsv1.ListAuditRecordsRequest{})
			return err
		},
		"VerifyAuditLog": func(c kbsv1.AdminServiceClient) error {
			_, err := c.VerifyAuditLog(ctx, &kbsv1.VerifyAuditLogRequest{})
			return err
		},
		"ExportKey": func(c kbsv1.AdminServiceClient) error {
			_, pub, _ := keyrelease.GenerateKey(keyrelease.KEMX25519)
			_, err := c.ExportKey(ctx, &kbsv1.ExportKeyRequest{KeyId: "k", KemId: x25519, PublicKey: pub})
			return err
		},
	}
	table := authz.Table()
	if len(calls) != len(kbsv1.AdminService_ServiceDesc.Methods) {
		t.Fatalf("test covers %d admin methods, the service has %d", len(calls), len(kbsv1.AdminService_ServiceDesc.Methods))
	}
	for name, call := range calls {
		t.Run(name, func(t *testing.T) {
			d := wantDenied(t, call(loader), codes.PermissionDenied, "not_authorized")
			rec := e.recordFor(d.RequestId)
			if rec.Operation != name || rec.Caller != loaderID.String() || rec.Decision != audit.Deny || rec.Reasons[0] != "not_authorized" {
				t.Errorf("audit record = %+v", rec)
			}
			readOnly := slices.Contains(table["/cml.kbs.v1.AdminService/"+name], authz.Auditor)
			err := call(auditor)
			if readOnly && err != nil {
				t.Errorf("auditor refused a read-only call: %v", err)
			}
			if !readOnly {
				wantDenied(t, err, codes.PermissionDenied, "not_authorized")
			}
		})
	}
	// The admin can still do everything afterwards (nothing above changed state).
	if _, err := e.release(e.broker(loaderID), attempt{keyID: "k"}); err != nil {
		t.Fatal(err)
	}
}

// TestEveryDecisionAudited runs a mix of calls and checks that every call
// produced exactly one record (except issued challenges) and the chain
// verifies.
func TestEveryDecisionAudited(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx := context.Background()
	e.createKey("k", e.defaultPolicy())
	kb := e.broker(loaderID)
	var ids []string
	note := func(id string) { ids = append(ids, id) }
	r, err := e.release(kb, attempt{keyID: "k"})
	if err != nil {
		t.Fatal(err)
	}
	note(r.resp.RequestId)
	_, err = e.release(kb, attempt{keyID: "k", nonce: r.nonce})
	note(wantDenied(t, err, codes.PermissionDenied, "nonce_reused").RequestId)
	_, err = e.broker(evilID).GetChallenge(ctx, &kbsv1.GetChallengeRequest{KeyId: "k"})
	note(wantDenied(t, err, codes.PermissionDenied, "spiffe_id_not_allowed").RequestId)
	_, err = kbsv1.NewAdminServiceClient(e.conn(loaderID)).ListKeys(ctx, &kbsv1.ListKeysRequest{})
	note(wantDenied(t, err, codes.PermissionDenied, "not_authorized").RequestId)
	for _, id := range ids {
		e.recordFor(id) // exactly one each
	}
	rep, err := e.st.VerifyAudit(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// CreateKey + PutPolicy + the four calls above.
	if rep.Records != 6 {
		t.Errorf("%d records, want 6", rep.Records)
	}
	e.checkNoSecrets(e.dek("k", 1), r.nonce)
}
