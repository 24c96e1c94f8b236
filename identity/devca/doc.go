// Package devca is a DEVELOPMENT-ONLY SPIFFE certificate authority.
//
// ┌──────────────────────────────────────────────────────────────────────┐
// │ DO NOT USE IN PRODUCTION. The CA key is an ordinary file (or lives   │
// │ in memory), nothing is audited, nothing is revocable and nothing     │
// │ attests the workloads it names. Production identities come from a    │
// │ SPIRE server through the SPIRE agent's Workload API.                 │
// └──────────────────────────────────────────────────────────────────────┘
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
//	written, err := devca.WriteDir("certs", td, []string{"kbs", "loader", "admin"}, 24*time.Hour)
//	// certs/ca.pem          the trust bundle (the CA certificate)
//	// certs/ca-key.pem      the CA private key, mode 0600
//	// certs/kbs.pem         X.509-SVID for spiffe://TD/kbs
//	// certs/kbs-key.pem     its PKCS#8 private key, mode 0600
//	// …
//
// and later, to add one identity signed by the same CA (the demo's intruder):
//
//	id, written, err := devca.AddSVID("certs", "intruder", 24*time.Hour)
//
// A name is one or more "/"-separated segments of [a-z0-9-]; the SPIFFE ID is
// spiffe://TD/<name> and the file names replace "/" with "_", so
// "ns/demo/loader" is written to ns_demo_loader.pem and ns_demo_loader-key.pem.
// Names "ca" and names ending in "-key" are refused because their files would
// collide with others. Existing files are never overwritten.
//
// The CA is ECDSA P-256, self-signed, with the trust domain's SPIFFE ID
// (spiffe://TD) as its only URI SAN and, optionally, a critical name
// constraint permitting only URI SANs in the trust domain. Each SVID is a
// leaf with exactly one URI SAN, key usage digitalSignature, extended key
// usages serverAuth and clientAuth, and no CA bit. The clock is injected with
// [Options].Now, and [CA.IssueValidity] picks exact NotBefore/NotAfter so
// tests can make expired or not-yet-valid SVIDs.
package devca
