package authz

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/reflect/protoreflect"

	kbsv1 "github.com/cml-project/cml/proto/cml/kbs/v1"
	"github.com/cml-project/cml/server/audit"
	"github.com/cml-project/cml/server/rpcstatus"
)

// served are the services registered on the broker's mTLS listener.
var served = []protoreflect.FileDescriptor{kbsv1.File_cml_kbs_v1_key_broker_proto, kbsv1.File_cml_kbs_v1_admin_proto}

func describedMethods() []string {
	var out []string
	for _, fd := range served {
		for i := range fd.Services().Len() {
			sd := fd.Services().Get(i)
			for j := range sd.Methods().Len() {
				out = append(out, fmt.Sprintf("/%s/%s", sd.FullName(), sd.Methods().Get(j).Name()))
			}
		}
	}
	return out
}

// TestTableCoversEveryMethod walks the service descriptors: every method
// has an entry, and every entry is a method that exists.
func TestTableCoversEveryMethod(t *testing.T) {
	methods := describedMethods()
	if len(methods) < 17 {
		t.Fatalf("only %d methods found in the descriptors", len(methods))
	}
	for _, m := range methods {
		roles, ok := Table()[m]
		if !ok {
			t.Errorf("%s has no authorization entry (deny by default, but every RPC must be decided explicitly)", m)
		}
		if len(roles) == 0 {
			t.Errorf("%s has an empty entry", m)
		}
	}
	for _, m := range Methods() {
		if !slices.Contains(methods, m) {
			t.Errorf("the table has an entry for %s, which no service defines", m)
		}
	}
	// The generated ServiceDescs agree with the descriptors.
	for _, sd := range []grpc.ServiceDesc{kbsv1.KeyBrokerService_ServiceDesc, kbsv1.AdminService_ServiceDesc} {
		for _, md := range sd.Methods {
			if _, ok := Table()["/"+sd.ServiceName+"/"+md.MethodName]; !ok {
				t.Errorf("%s/%s has no entry", sd.ServiceName, md.MethodName)
			}
		}
		if len(sd.Streams) != 0 {
			t.Errorf("%s has streaming methods; the stream interceptor denies them all", sd.ServiceName)
		}
	}
}

func TestAuthorize(t *testing.T) {
	a, err := New([]string{"spiffe://example.org/admin"}, []string{"spiffe://example.org/audit/*"})
	if err != nil {
		t.Fatal(err)
	}
	var (
		admin   = spiffeid.RequireFromString("spiffe://example.org/admin")
		auditor = spiffeid.RequireFromString("spiffe://example.org/audit/bob")
		loader  = spiffeid.RequireFromString("spiffe://example.org/ns/ml/loader")
		foreign = spiffeid.RequireFromString("spiffe://other.org/admin")
	)
	for _, tc := range []struct {
		method string
		id     spiffeid.ID
		want   Role // "" = denied
	}{
		{kbsv1.KeyBrokerService_ReleaseKey_FullMethodName, loader, Loader},
		{kbsv1.KeyBrokerService_ReleaseKey_FullMethodName, admin, Loader},
		{kbsv1.AdminService_CreateKey_FullMethodName, admin, Admin},
		{kbsv1.AdminService_CreateKey_FullMethodName, auditor, ""},
		{kbsv1.AdminService_CreateKey_FullMethodName, loader, ""},
		{kbsv1.AdminService_CreateKey_FullMethodName, foreign, ""},
		{kbsv1.AdminService_ExportKey_FullMethodName, auditor, ""},
		{kbsv1.AdminService_ListAuditRecords_FullMethodName, auditor, Auditor},
		{kbsv1.AdminService_ListAuditRecords_FullMethodName, admin, Admin},
		{kbsv1.AdminService_VerifyAuditLog_FullMethodName, loader, ""},
		{"/grpc.health.v1.Health/Check", admin, ""},
		{"/cml.kbs.v1.AdminService/Nonexistent", admin, ""},
	} {
		got, err := a.Authorize(tc.method, tc.id)
		if got != tc.want || (tc.want == "") != errors.Is(err, ErrNotAuthorized) {
			t.Errorf("Authorize(%s, %s) = %q, %v; want %q", tc.method, tc.id, got, err, tc.want)
		}
	}
	if a.Roles(spiffeid.ID{}) != nil {
		t.Error("the zero ID holds roles")
	}
	if _, err := New([]string{"spiffe://example.org"}, nil); err == nil {
		t.Error("a trust-domain-only admin pattern was accepted")
	}
	if _, err := New(nil, []string{"not a spiffe id"}); err == nil {
		t.Error("a malformed auditor pattern was accepted")
	}
}

type recorder struct{ entries []audit.Entry }

func (r *recorder) AppendAudit(_ context.Context, e audit.Entry) (audit.Record, error) {
	if err := e.Validate(); err != nil {
		return audit.Record{}, err
	}
	r.entries = append(r.entries, e)
	return audit.Record{Entry: e}, nil
}

func TestInterceptorWithoutPeer(t *testing.T) {
	a, _ := New(nil, nil)
	rec := &recorder{}
	called := false
	_, err := a.UnaryInterceptor(rec, nil)(context.Background(), &kbsv1.GetKeyRequest{KeyId: "k"},
		&grpc.UnaryServerInfo{FullMethod: kbsv1.AdminService_GetKey_FullMethodName},
		func(context.Context, any) (any, error) { called = true; return nil, nil })
	if called || rpcstatus.Classify(err).Code != codes.Unauthenticated {
		t.Fatalf("no peer: called=%v err=%v", called, err)
	}
	// Stream calls are all denied.
	serr := a.StreamInterceptor()(nil, nil, &grpc.StreamServerInfo{FullMethod: "/grpc.health.v1.Health/Watch"},
		func(any, grpc.ServerStream) error { called = true; return nil })
	if called || rpcstatus.DetailOf(serr).GetReasonCode() != "not_authorized" {
		t.Fatalf("stream: called=%v err=%v", called, serr)
	}
}

func TestRequire(t *testing.T) {
	if _, err := Require(context.Background()); rpcstatus.ReasonOf(err) != "not_authorized" {
		t.Errorf("Require without a grant = %v", err)
	}
	id := spiffeid.RequireFromString("spiffe://example.org/x")
	g, err := Require(WithGrant(context.Background(), Grant{Caller: id, Role: Loader}))
	if err != nil || g.Caller != id {
		t.Errorf("Require = %v, %v", g, err)
	}
	if _, ok := FromContext(WithGrant(context.Background(), Grant{})); ok {
		t.Error("a grant without caller counts")
	}
}
