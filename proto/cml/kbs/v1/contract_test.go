package kbsv1_test

import (
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	kbsv1 "github.com/cml-project/cml/proto/cml/kbs/v1"
)

// The RPCs of each service, in declaration order. Renaming, adding or
// removing an RPC must be a deliberate change of this list: clients, the
// authorisation table and the audit log all name RPCs.
var wantMethods = map[string][]string{
	"cml.kbs.v1.KeyBrokerService": {"GetChallenge", "ReleaseKey"},
	"cml.kbs.v1.AdminService": {
		"CreateKey", "ImportKey", "RotateKey", "GetKey", "ListKeys",
		"DisableKey", "EnableKey", "DestroyKey",
		"PutPolicy", "GetPolicy", "ListPolicies", "TestPolicy",
		"ListAuditRecords", "VerifyAuditLog",
		"ExportKey",
	},
}

func TestServiceDescriptorsListExpectedRPCs(t *testing.T) {
	files := []protoreflect.FileDescriptor{
		kbsv1.File_cml_kbs_v1_types_proto,
		kbsv1.File_cml_kbs_v1_key_broker_proto,
		kbsv1.File_cml_kbs_v1_admin_proto,
	}
	got := map[string][]string{}
	for _, fd := range files {
		svcs := fd.Services()
		for i := range svcs.Len() {
			sd := svcs.Get(i)
			var names []string
			for j := range sd.Methods().Len() {
				md := sd.Methods().Get(j)
				if md.IsStreamingClient() || md.IsStreamingServer() {
					t.Errorf("%s: streaming RPCs are not part of the contract", md.FullName())
				}
				names = append(names, string(md.Name()))
			}
			got[string(sd.FullName())] = names
		}
	}
	if len(got) != len(wantMethods) {
		t.Errorf("services = %v, want %v", keys(got), keys(wantMethods))
	}
	for svc, want := range wantMethods {
		if !slices.Equal(got[svc], want) {
			t.Errorf("%s methods = %v, want %v", svc, got[svc], want)
		}
	}
}

// The grpc-go service descriptors (what servers register) must agree with
// the protobuf descriptors, and every RPC must follow the Request/Response
// naming the lint enforces, so the generated code is not stale.
func TestGRPCServiceDescsMatch(t *testing.T) {
	for _, sd := range []*grpc.ServiceDesc{&kbsv1.KeyBrokerService_ServiceDesc, &kbsv1.AdminService_ServiceDesc} {
		want, ok := wantMethods[sd.ServiceName]
		if !ok {
			t.Errorf("unexpected service %q", sd.ServiceName)
			continue
		}
		if len(sd.Streams) != 0 {
			t.Errorf("%s has %d streams, want 0", sd.ServiceName, len(sd.Streams))
		}
		var got []string
		for _, m := range sd.Methods {
			got = append(got, m.MethodName)
		}
		if !slices.Equal(got, want) {
			t.Errorf("%s ServiceDesc methods = %v, want %v", sd.ServiceName, got, want)
		}
		desc, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(sd.ServiceName))
		if err != nil {
			t.Fatalf("%s not registered: %v", sd.ServiceName, err)
		}
		methods := desc.(protoreflect.ServiceDescriptor).Methods()
		for _, name := range want {
			md := methods.ByName(protoreflect.Name(name))
			if md == nil {
				t.Errorf("%s.%s missing from the descriptor", sd.ServiceName, name)
				continue
			}
			if in := string(md.Input().Name()); in != name+"Request" {
				t.Errorf("%s input = %s, want %sRequest", md.FullName(), in, name)
			}
			if out := string(md.Output().Name()); out != name+"Response" {
				t.Errorf("%s output = %s, want %sResponse", md.FullName(), out, name)
			}
		}
	}
}

// HPKE enum numbers are the RFC 9180 identifiers: REPORTDATA and crypto/hpke
// use uint16(value) directly, so a renumbering would silently break
// attestation.
func TestHPKEEnumNumbersAreRFC9180IDs(t *testing.T) {
	tests := []struct {
		name string
		got  int32
		want uint16
	}{
		{"DHKEM(X25519, HKDF-SHA256)", int32(kbsv1.HpkeKem_HPKE_KEM_DHKEM_X25519_HKDF_SHA256), 0x0020},
		{"MLKEM768X25519", int32(kbsv1.HpkeKem_HPKE_KEM_MLKEM768_X25519), 0x647a},
		{"HKDF-SHA256", int32(kbsv1.HpkeKdf_HPKE_KDF_HKDF_SHA256), 0x0001},
		{"AES-256-GCM", int32(kbsv1.HpkeAead_HPKE_AEAD_AES_256_GCM), 0x0002},
	}
	for _, tt := range tests {
		if tt.got != int32(tt.want) {
			t.Errorf("%s = %#04x, want %#04x", tt.name, tt.got, tt.want)
		}
	}
}

// Every enum's zero value is its UNSPECIFIED value, so an unset field never
// means something (fail closed on a zero value).
func TestEnumZeroValuesAreUnspecified(t *testing.T) {
	enums := kbsv1.File_cml_kbs_v1_types_proto.Enums()
	if enums.Len() == 0 {
		t.Fatal("types.proto declares no enums")
	}
	for i := range enums.Len() {
		ed := enums.Get(i)
		zero := ed.Values().ByNumber(0)
		if zero == nil || !strings.HasSuffix(string(zero.Name()), "_UNSPECIFIED") {
			t.Errorf("%s: zero value is %v, want *_UNSPECIFIED", ed.FullName(), zero)
		}
	}
}

func keys(m map[string][]string) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}
