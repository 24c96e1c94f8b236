package verifier

import (
	"encoding/json"
	"testing"

	"github.com/google/go-tdx-guest/abi"
	"github.com/google/go-tdx-guest/pcs"
	pb "github.com/google/go-tdx-guest/proto/tdx"

	"github.com/cml-project/cml/tdx/collateral"
	"github.com/cml-project/cml/tdx/tdxsim"
)

func TestCombine(t *testing.T) {
	const (
		u  = pcs.TcbComponentStatusUpToDate
		sw = pcs.TcbComponentStatusSwHardeningNeeded
		c  = pcs.TcbComponentStatusConfigurationNeeded
		cs = pcs.TcbComponentStatusConfigurationAndSWHardeningNeeded
		o  = pcs.TcbComponentStatusOutOfDate
		oc = pcs.TcbComponentStatusOutOfDateConfigurationNeeded
		r  = pcs.TcbComponentStatusRevoked
	)
	for _, tc := range []struct {
		in   []pcs.TcbComponentStatus
		want TCBStatus
	}{
		{[]pcs.TcbComponentStatus{u, u, u}, TCBStatusUpToDate},
		{[]pcs.TcbComponentStatus{sw, u}, TCBStatusSWHardeningNeeded},
		{[]pcs.TcbComponentStatus{c, u}, TCBStatusConfigurationNeeded},
		{[]pcs.TcbComponentStatus{sw, c}, TCBStatusConfigurationAndSWHardeningNeeded},
		{[]pcs.TcbComponentStatus{cs}, TCBStatusConfigurationAndSWHardeningNeeded},
		{[]pcs.TcbComponentStatus{u, o}, TCBStatusOutOfDate},
		{[]pcs.TcbComponentStatus{sw, o}, TCBStatusOutOfDate},
		{[]pcs.TcbComponentStatus{c, o}, TCBStatusOutOfDateConfigurationNeeded},
		{[]pcs.TcbComponentStatus{oc, u}, TCBStatusOutOfDateConfigurationNeeded},
		{[]pcs.TcbComponentStatus{o, r}, TCBStatusRevoked},
		{[]pcs.TcbComponentStatus{"SomethingNew"}, TCBStatusRevoked},
	} {
		if got := combine(tc.in...); got != tc.want {
			t.Errorf("combine(%v) = %s, want %s", tc.in, got, tc.want)
		}
	}
}

// TestMatchQEIdentity checks the QE identity comparison used when
// go-tdx-guest stops at the TD TCB status, on a simulator QE report and QE
// identity, changing one field at a time.
func TestMatchQEIdentity(t *testing.T) {
	s := newSim(t, tdxsim.Options{})
	a, err := abi.QuoteToProto(quote(t, s, [64]byte{}, s.DefaultTD()))
	if err != nil {
		t.Fatal(err)
	}
	report := a.(*pb.QuoteV4).GetSignedData().GetCertificationData().GetQeReportCertificationData().GetQeReport()
	var body []byte
	for _, e := range s.Collateral() {
		if e.Kind == collateral.KindQEIdentity {
			body = e.Body
		}
	}
	fresh := func() *pcs.EnclaveIdentity {
		var qe pcs.QeIdentity
		if err := json.Unmarshal(body, &qe); err != nil {
			t.Fatal(err)
		}
		return &qe.EnclaveIdentity
	}
	if err := matchQEIdentity(fresh(), report); err != nil {
		t.Fatalf("simulator QE report does not match its QE identity: %v", err)
	}
	for name, edit := range map[string]func(*pcs.EnclaveIdentity){
		"mrsigner":        func(id *pcs.EnclaveIdentity) { id.Mrsigner.Bytes[0] ^= 1 },
		"isvprodid":       func(id *pcs.EnclaveIdentity) { id.IsvProdID++ },
		"miscselect":      func(id *pcs.EnclaveIdentity) { id.Miscselect.Bytes[0] = 1 },
		"miscselect size": func(id *pcs.EnclaveIdentity) { id.MiscselectMask.Bytes = id.MiscselectMask.Bytes[:3] },
		"attributes":      func(id *pcs.EnclaveIdentity) { id.Attributes.Bytes[0] ^= 0x10 },
		"attributes size": func(id *pcs.EnclaveIdentity) { id.AttributesMask.Bytes = id.AttributesMask.Bytes[:8] },
	} {
		id := fresh()
		edit(id)
		if err := matchQEIdentity(id, report); err == nil {
			t.Errorf("%s changed: QE identity still matches", name)
		}
	}
}
