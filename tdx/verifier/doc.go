// Package verifier checks Intel TDX quotes: is this quote authentic, and
// what does it say? It does not decide policy.
//
//	v, err := verifier.New(verifier.Config{
//		Collateral: getter,      // *collateral.Getter: PCS, PCCS or an imported directory
//		Now:        clock.Now,   // injected; tests pin it
//	})
//	claims, err := v.Verify(ctx, quote)
//	if err != nil {
//		reason := verifier.ReasonOf(err) // e.g. "pck_revoked", "collateral_expired"
//		...
//	}
//	// policy (the key broker): claims.MRTD, claims.RTMR, claims.Debug,
//	// claims.ReportData, claims.TCBStatus, ...
//
// Verification is go-tdx-guest v0.3.1's verify package: the quote signature
// by the attestation key; the QE report signature by the PCK key and its
// report data binding the attestation key; the PCK chain to the pinned
// Intel SGX Root CA (IntelRootCA, embedded; Config.ExtraRoots adds others,
// such as the TDX simulator's, only when the caller passes them); the PCK
// and root CRLs; TCB info and QE identity (signatures, expiry, match); and
// the TCB status.
//
// Around it, this package:
//   - checks the quote layout itself before go-tdx-guest parses it (its
//     parser can panic on inconsistent sizes), bounds the input size, and
//     turns any library panic into an error;
//   - builds a fresh verify.Options per call (the library writes into it),
//     so concurrent Verify calls are independent;
//   - never lets go-tdx-guest use its default getter (which retries the
//     network for minutes): collateral comes only from Config.Collateral,
//     with the caller's context;
//   - maps every failure to a stable Reason (errors.go holds the single
//     table that reads go-tdx-guest's error texts);
//   - evaluates the TCB status itself, because go-tdx-guest rejects
//     anything but UpToDate: a quote that is authentic but whose platform
//     is, say, OutOfDate fails with Reason tcb_out_of_date and an Error
//     whose Claims are set, so a policy that explicitly accepts that status
//     can still proceed. Nothing else ever returns claims with an error.
//
// # Caching
//
// All but the per-quote part of that verification depends only on the
// platform's PCK certificate chain, the collateral and the time. A Verifier
// therefore remembers, per PCK chain (SHA-256 of its exact bytes), the
// collateral set with which go-tdx-guest last fully verified a quote from
// it: the chain and every collateral response go-tdx-guest fetched (URL,
// headers, body, in its order), the parsed TCB info and QE
// identity, and a validity window (latest NotBefore / issue date, earliest
// NotAfter / nextUpdate over every certificate, CRL and collateral
// document involved and the trusted roots). A later quote takes the cached
// path only if its chain bytes match, the clock is inside the window, and
// the collateral source now serves byte-identical collateral for the same
// URLs (fetched on every call, so a new CRL or TCB info is a miss). The
// cached path then repeats, in go-tdx-guest's order and with its error
// texts, go-tdx-guest's per-quote checks: the quote layout and TEE type,
// the quote signature by the attestation key, the QE report signature by
// the cached (already verified) PCK leaf and the QE report data binding
// (2 of the 19 ECDSA verifications, 1 when the QE report and its signature
// are the bytes that last verified under that leaf, as in every quote of
// a platform; the PCK chain's own checks are a function of the chain
// bytes, the roots, the CRLs and the time, all covered by the cache key
// and window), and its per-quote
// collateral checks (FMSPC, PCE-ID, MRSIGNERSEAM, SEAM attributes, TD TCB
// level and TDX module level and their status; QE report MISCSELECT,
// attributes, MRSIGNER, ISVPRODID and QE TCB level) on the cached, already
// verified collateral. Results, reasons and claims are the same as
// without the cache (tests run every simulator case both ways, and a
// differential tests and fuzz targets compare the two paths on validly
// signed quotes and collateral with arbitrary field values, and on quotes
// with broken signatures or QE report bindings). The cache
// holds at most 256 platforms and is cleared when full.
// Config.DisableCache turns it off.
//
// It does not use go-tdx-guest's validate package: policy (measurements,
// DEBUG, REPORTDATA, minimum TEE TCB SVN, accepted TCB statuses) is the
// caller's. Note for callers that do: validate allows DEBUG TDs by default,
// and panics on a MinimumTeeTcbSvn shorter than 16 bytes.
package verifier
