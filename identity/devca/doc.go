// Package devca is a DEVELOPMENT-ONLY SPIFFE certificate authority.
//
// DO NOT USE IN PRODUCTION. The CA key is an ordinary file (or lives in
// memory), nothing is audited, nothing is revocable and nothing attests the
// workloads it names. Production identities come from a SPIRE server
// through the SPIRE agent's Workload API.
//
// It exists for unit tests, the demo and setups without SPIRE. In tests:
//
//	td := spiffeid.RequireTrustDomainFromString("example.org")
//	ca, err := devca.New(td, devca.Options{})
//	svid, err := ca.Issue(spiffeid.RequireFromPath(td, "/kbs"), time.Hour)
//	src := identity.NewStaticSource(svid, ca.Bundle())
//
// On disk (what `kbsctl dev certs DIR --trust-domain TD --id kbs --id loader`
// runs):
//
//	written, err := devca.WriteOrExtendDir("certs", td, []string{"kbs", "loader", "admin"}, devca.DefaultSVIDTTL)
//	// certs/ca.pem          the trust bundle (the CA certificate)
//	// certs/ca-key.pem      the CA private key, mode 0600
//	// certs/kbs.pem         X.509-SVID for spiffe://TD/kbs
//	// certs/kbs-key.pem     its PKCS#8 private key, mode 0600
//	// …
//
// That is WriteDir on a directory without ca.pem. Run on a directory that
// already holds one, it issues the new names with that CA (ca-key.pem)
// instead — how the demo adds its intruder, a valid identity of the trust
// domain that no policy lists:
//
//	written, err := devca.WriteOrExtendDir("certs", spiffeid.TrustDomain{}, []string{"intruder"}, devca.DefaultSVIDTTL)
//	id, written, err := devca.AddSVID("certs", "intruder", devca.DefaultSVIDTTL) // the same, one name
//
// A name is one or more "/"-separated segments of [a-z0-9-]; the SPIFFE ID is
// spiffe://TD/<name> and the file names replace "/" with "_", so
// "ns/demo/loader" is written to ns_demo_loader.pem and ns_demo_loader-key.pem.
// Names "ca" and names ending in "-key" are refused because their files would
// collide with others. Existing files are never overwritten, and a call
// that fails writes nothing.
//
// The CA is ECDSA P-256, self-signed, with the trust domain's SPIFFE ID
// (spiffe://TD) as its only URI SAN and, optionally, a critical name
// constraint permitting only URI SANs in the trust domain. Each SVID is a
// leaf with exactly one URI SAN, key usage digitalSignature, extended key
// usages serverAuth and clientAuth, and no CA bit. The clock is injected with
// [Options].Now, and [CA.IssueValidity] picks exact NotBefore/NotAfter so
// tests can make expired or not-yet-valid SVIDs.
package devca
