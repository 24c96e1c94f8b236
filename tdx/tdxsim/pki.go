package tdxsim

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"
	"time"

	"github.com/google/go-tdx-guest/pcs"
)

// Certificate common names, exactly as Intel's (go-tdx-guest checks them).
const (
	cnRoot       = "Intel SGX Root CA"
	cnPlatformCA = "Intel SGX PCK Platform CA"
	cnPCK        = "Intel SGX PCK Certificate"
	cnTCBSigning = "Intel SGX TCB Signing"
)

// simHost is a reserved (RFC 2606) host: nothing the simulator names can
// ever resolve, so nothing is fetched from it. The collateral getter serves
// documents by path, from its directory.
const simHost = "https://tdxsim.invalid"

const (
	rootCRLURL = simHost + "/IntelSGXRootCA.der"
	pckCRLURL  = simHost + "/sgx/certification/v4/pckcrl?ca=platform&encoding=der"
)

// simOU marks every simulator certificate. go-tdx-guest checks only the
// common names, so the simulator's chain verifies; but no simulator name
// equals an Intel name, so a simulator certificate is recognisable at a
// glance, and certificate path building never tries Intel's root for a
// simulator certificate (or the reverse).
const simOU = "TDX simulator - development only, not Intel"

func intelName(cn string) pkix.Name {
	return pkix.Name{
		CommonName:         cn,
		OrganizationalUnit: []string{simOU},
		Organization:       []string{"Intel Corporation"},
		Locality:           []string{"Santa Clara"},
		Province:           []string{"CA"},
		Country:            []string{"US"},
	}
}

// keySource derives keys and serial numbers from a seed (deterministic,
// for tests) or from crypto/rand (seed == nil).
type keySource struct{ seed []byte }

func (ks keySource) bytes(label string, n int) ([]byte, error) {
	if ks.seed == nil {
		b := make([]byte, n)
		_, err := rand.Read(b)
		return b, err
	}
	return hkdf.Key(sha256.New, ks.seed, nil, "tdxsim/v1/"+label, n)
}

// key returns a P-256 key. With a seed, the scalar is derived with HKDF and
// rejection-sampled (ParseRawPrivateKey refuses values ≥ the group order).
func (ks keySource) key(label string) (*ecdsa.PrivateKey, error) {
	if ks.seed == nil {
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	}
	for i := 0; i < 64; i++ {
		b, err := ks.bytes(fmt.Sprintf("key/%s/%d", label, i), 32)
		if err != nil {
			return nil, err
		}
		if k, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), b); err == nil {
			return k, nil
		}
	}
	return nil, errors.New("tdxsim: could not derive a key from the seed")
}

// serial returns a positive 159-bit serial number, like Intel's.
func (ks keySource) serial(label string) (*big.Int, error) {
	b, err := ks.bytes("serial/"+label, 20)
	if err != nil {
		return nil, err
	}
	b[0] &= 0x7f
	b[0] |= 0x40
	return new(big.Int).SetBytes(b), nil
}

func subjectKeyID(pub *ecdsa.PublicKey) []byte {
	raw, _ := pub.Bytes() // cannot fail for a valid P-256 key
	sum := sha1.Sum(raw)  // RFC 5280 method 1; not a security use
	return sum[:]
}

func createCert(tmpl, parent *x509.Certificate, pub *ecdsa.PublicKey, signer *ecdsa.PrivateKey) (*x509.Certificate, error) {
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
	if err != nil {
		return nil, fmt.Errorf("tdxsim: create %q certificate: %w", tmpl.Subject.CommonName, err)
	}
	return x509.ParseCertificate(der)
}

// pki is the simulator's certificate hierarchy, shaped like Intel's:
//
//	Intel SGX Root CA ─┬─ Intel SGX PCK Platform CA ── Intel SGX PCK Certificate
//	                   └─ Intel SGX TCB Signing
type pki struct {
	rootKey, caKey, pckKey, tcbKey *ecdsa.PrivateKey
	root, ca, pck, tcb             *x509.Certificate
}

func newPKI(ks keySource, p *Platform, notBefore, notAfter time.Time) (*pki, error) {
	var x pki
	var err error
	for _, k := range []struct {
		dst   **ecdsa.PrivateKey
		label string
	}{{&x.rootKey, "root"}, {&x.caKey, "platform-ca"}, {&x.pckKey, "pck"}, {&x.tcbKey, "tcb-signing"}} {
		if *k.dst, err = ks.key(k.label); err != nil {
			return nil, err
		}
	}
	serial := func(label string) *big.Int {
		s, serr := ks.serial(label)
		if serr != nil && err == nil {
			err = serr
		}
		return s
	}
	rootTmpl := &x509.Certificate{
		SerialNumber:          serial("root"),
		Subject:               intelName(cnRoot),
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            1,
		SubjectKeyId:          subjectKeyID(&x.rootKey.PublicKey),
		CRLDistributionPoints: []string{rootCRLURL},
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          serial("platform-ca"),
		Subject:               intelName(cnPlatformCA),
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            0,
		MaxPathLenZero:        true,
		SubjectKeyId:          subjectKeyID(&x.caKey.PublicKey),
		CRLDistributionPoints: []string{rootCRLURL},
	}
	sgxExt, extErr := sgxExtension(ks, p)
	if extErr != nil {
		return nil, extErr
	}
	// Exactly six extensions, as go-tdx-guest requires of a PCK certificate:
	// authority and subject key ids, key usage, basic constraints, CRL
	// distribution points, and the SGX extension.
	pckTmpl := &x509.Certificate{
		SerialNumber:          serial("pck"),
		Subject:               intelName(cnPCK),
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageContentCommitment,
		BasicConstraintsValid: true,
		SubjectKeyId:          subjectKeyID(&x.pckKey.PublicKey),
		CRLDistributionPoints: []string{pckCRLURL},
		ExtraExtensions:       []pkix.Extension{{Id: pcs.OidSgxExtension, Value: sgxExt}},
	}
	tcbTmpl := &x509.Certificate{
		SerialNumber:          serial("tcb-signing"),
		Subject:               intelName(cnTCBSigning),
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageContentCommitment,
		BasicConstraintsValid: true,
		SubjectKeyId:          subjectKeyID(&x.tcbKey.PublicKey),
		CRLDistributionPoints: []string{rootCRLURL},
	}
	if err != nil {
		return nil, err
	}
	if x.root, err = createCert(rootTmpl, rootTmpl, &x.rootKey.PublicKey, x.rootKey); err != nil {
		return nil, err
	}
	if x.ca, err = createCert(caTmpl, x.root, &x.caKey.PublicKey, x.rootKey); err != nil {
		return nil, err
	}
	if x.pck, err = createCert(pckTmpl, x.ca, &x.pckKey.PublicKey, x.caKey); err != nil {
		return nil, err
	}
	if x.tcb, err = createCert(tcbTmpl, x.root, &x.tcbKey.PublicKey, x.rootKey); err != nil {
		return nil, err
	}
	return &x, nil
}

func oid(suffix ...int) asn1.ObjectIdentifier {
	o := asn1.ObjectIdentifier{1, 2, 840, 113741, 1, 13, 1}
	return append(o, suffix...)
}

type oidValue[T any] struct {
	ID    asn1.ObjectIdentifier
	Value T
}

type oidSeq struct {
	ID    asn1.ObjectIdentifier
	Value []asn1.RawValue
}

func raw(v any) (asn1.RawValue, error) {
	b, err := asn1.Marshal(v)
	return asn1.RawValue{FullBytes: b}, err
}

// sgxExtension encodes the SGX extension (OID 1.2.840.113741.1.13.1) of a
// PCK certificate for a multi-package ("platform") SGX/TDX machine, with the
// same elements Intel's carry: PPID, TCB (16 component SVNs, PCESVN,
// CPUSVN), PCE-ID, FMSPC, SGX type, platform instance id and configuration.
func sgxExtension(ks keySource, p *Platform) ([]byte, error) {
	ppid, err := ks.bytes("ppid", 16)
	if err != nil {
		return nil, err
	}
	instance, err := ks.bytes("platform-instance", 16)
	if err != nil {
		return nil, err
	}
	var tcb []asn1.RawValue
	for i, svn := range p.CPUSVN {
		r, err := raw(oidValue[int]{oid(2, i+1), int(svn)})
		if err != nil {
			return nil, err
		}
		tcb = append(tcb, r)
	}
	for _, v := range []any{
		oidValue[int]{oid(2, 17), int(p.PCESVN)},
		oidValue[[]byte]{oid(2, 18), p.CPUSVN[:]},
	} {
		r, err := raw(v)
		if err != nil {
			return nil, err
		}
		tcb = append(tcb, r)
	}
	var config []asn1.RawValue
	for i, b := range []bool{true, false, true} { // dynamicPlatform, cachedKeys, SMTEnabled
		r, err := raw(oidValue[bool]{oid(7, i+1), b})
		if err != nil {
			return nil, err
		}
		config = append(config, r)
	}
	var elems []asn1.RawValue
	for _, v := range []any{
		oidValue[[]byte]{oid(1), ppid},
		oidSeq{oid(2), tcb},
		oidValue[[]byte]{oid(3), p.PCEID[:]},
		oidValue[[]byte]{oid(4), p.FMSPC[:]},
		oidValue[asn1.Enumerated]{oid(5), 1}, // SGX type: Scalable
		oidValue[[]byte]{oid(6), instance},
		oidSeq{oid(7), config},
	} {
		r, err := raw(v)
		if err != nil {
			return nil, err
		}
		elems = append(elems, r)
	}
	return asn1.Marshal(elems)
}

// crl issues a CRL signed by issuer, revoking the given serials.
func crl(issuer *x509.Certificate, key *ecdsa.PrivateKey, number int64, thisUpdate, nextUpdate time.Time, revoked ...*big.Int) ([]byte, error) {
	tmpl := &x509.RevocationList{
		Number:     big.NewInt(number),
		ThisUpdate: thisUpdate,
		NextUpdate: nextUpdate,
	}
	for _, s := range revoked {
		tmpl.RevokedCertificateEntries = append(tmpl.RevokedCertificateEntries, x509.RevocationListEntry{
			SerialNumber:   s,
			RevocationTime: thisUpdate,
		})
	}
	der, err := x509.CreateRevocationList(rand.Reader, tmpl, issuer, key)
	if err != nil {
		return nil, fmt.Errorf("tdxsim: create crl of %q: %w", issuer.Subject.CommonName, err)
	}
	return der, nil
}
