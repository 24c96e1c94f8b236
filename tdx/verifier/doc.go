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
// It does not use go-tdx-guest's validate package: policy (measurements,
// DEBUG, REPORTDATA, minimum TEE TCB SVN, accepted TCB statuses) is the
// caller's. Note for callers that do: validate allows DEBUG TDs by default,
// and panics on a MinimumTeeTcbSvn shorter than 16 bytes.
package verifier
