// Package collateral supplies the Intel collateral that TDX quote
// verification needs — TDX TCB info, TD_QE identity, the PCK CRL and the
// Intel SGX Root CA CRL — from Intel PCS, from a PCCS, or from a directory
// (air-gapped clusters), byte for byte as Intel signed it.
//
//	// Intel PCS (default base URL), cached in and persisted to dir:
//	g, err := collateral.New(collateral.Config{Dir: dir, HTTPClient: client, Now: time.Now})
//	// a PCCS (its own TLS root in client's transport):
//	g, err := collateral.New(collateral.Config{Dir: dir, BaseURL: "https://pccs.example:8081", HTTPClient: client, Now: time.Now})
//	// air-gapped: only what was imported into dir, never the network:
//	g, err := collateral.New(collateral.Config{Dir: dir, Offline: true, Now: time.Now})
//
//	v, err := verifier.New(verifier.Config{Collateral: g, Now: time.Now})
//
//	// kbsctl collateral import SRC: validate a bundle and install it
//	results, err := collateral.Import(ctx, src, dir, time.Now())
//	// on a connected machine, build a bundle for some platforms:
//	infos, err := g.Prefetch(ctx, "90c06f000000")
//
// A Getter keeps each document in memory until its nextUpdate (optionally
// refetching earlier, Config.RefreshAfter), serialises fetches per document
// (concurrent misses make one request), bounds each fetch by
// Config.FetchTimeout and the caller's context, and persists what it
// fetches, so a restart does not refetch. Offline, a missing or expired
// document is an immediate ErrMissing or ErrExpired. Nothing here decides
// trust: signatures are checked when a document is loaded (to catch
// corruption), but the verifier checks every document against its pinned
// roots on every quote.
//
// A hit — the steady state: the verifier asks for the same four documents
// for every quote — takes no per-document lock and copies nothing. Get
// returns the header map (issuer chain URL-escaped once per document) and
// the body it built when it loaded the document, shared by all callers:
// callers must not modify them. The verifier and go-tdx-guest only read
// them, and a test (TestVerifierLeavesServedCollateral) holds them to
// that. A newer document replaces the old one; it never changes bytes
// already served.
//
// # Directory layout
//
// One directory, shared by the getter's cache, Import, Prefetch and the
// TDX simulator (tdxsim writes its collateral in it, so a broker loads it
// exactly like imported collateral). File names are fixed; FMSPC in
// lowercase hex; CA is "platform" or "processor":
//
//	tcbinfo-<fmspc>.json                 body of GET {base}/tdx/certification/v4/tcb?fmspc=<fmspc>
//	tcbinfo-<fmspc>.issuer-chain.pem     its TCB-Info-Issuer-Chain header, URL-decoded (signing cert, root)
//	qeidentity.json                      body of GET {base}/tdx/certification/v4/qe/identity
//	qeidentity.issuer-chain.pem          its SGX-Enclave-Identity-Issuer-Chain header, URL-decoded
//	pckcrl-<ca>.der                      body of GET {base}/sgx/certification/v4/pckcrl?ca=<ca>&encoding=der (DER)
//	pckcrl-<ca>.issuer-chain.pem         its SGX-PCK-CRL-Issuer-Chain header, URL-decoded
//	rootcrl.der                          the Intel SGX Root CA CRL (DER; https://certificates.trustedservices.intel.com/IntelSGXRootCA.der
//	                                     or a PCCS's /sgx/certification/v4/rootcacrl, hex-decoded if needed)
//
// Bodies are stored exactly as received (CRLs served hex-encoded by some
// PCCS versions are hex-decoded, which is lossless). Files are written to a
// temporary name and renamed; the issuer chain before the body.
package collateral
