// Package tdxsim simulates an Intel TDX platform for tests and development:
// a certificate hierarchy with Intel's certificate names, signed collateral,
// and TDX quotes (version 4) over any REPORTDATA, so that tests, the demo
// and the end-to-end suite exercise the real quote verification code.
//
//	sim, err := tdxsim.New(tdxsim.Options{Now: now})              // in memory
//	sim, err := tdxsim.Init(dir, tdxsim.Options{Now: time.Now()}) // kbsctl dev tdxsim init DIR
//	sim, err := tdxsim.Load(dir)                                  // the loader's simulated quote provider
//
//	quote, err := sim.Quote(reportData, sim.DefaultTD())
//	root := sim.RootPEM()              // trust explicitly: verifier.Config.ExtraRoots
//	err = sim.WriteCollateral(dir)     // collateral directory layout (package collateral)
//
// What it creates, shaped like Intel's:
//
//   - "Intel SGX Root CA" (self-signed, CRL distribution point on the
//     reserved host tdxsim.invalid), "Intel SGX PCK Platform CA", an
//     "Intel SGX PCK Certificate" with the SGX extension (OID
//     1.2.840.113741.1.13.1: PPID, TCB component SVNs, PCESVN, CPUSVN,
//     PCE-ID, FMSPC, SGX type, platform instance id, configuration), and
//     "Intel SGX TCB Signing". Every name also carries the organizational
//     unit "TDX simulator - development only, not Intel": go-tdx-guest
//     checks only the common names, so nothing can mistake a simulator
//     certificate for Intel's.
//   - TDX TCB info (version 3) and TD_QE identity (version 2), signed by
//     the TCB signing key, a root CRL and a PCK CRL (optionally revoking
//     the PCK certificate). Options.TCBStatus chooses the status the TCB
//     info gives the platform.
//   - Quotes: the TD quote body with the chosen MRTD, RTMRs, MRCONFIGID,
//     MROWNER, MROWNERCONFIG, attributes (DEBUG on or off), XFAM and TEE TCB
//     SVN, signed by the attestation key; a QE report whose report data is
//     SHA-256(attestation key ‖ QE auth data) ‖ zeros, signed by the PCK key
//     (once: like a real quoting enclave's, the QE report and its signature
//     are the same in every quote of a platform); and the PCK certificate
//     chain.
//
// Keys, serial numbers and identifiers are derived from Options.Seed when
// given (deterministic tests), else random.
//
// Nothing here weakens production verification: a verifier accepts these
// quotes only if the caller passes the simulator's root explicitly. The
// directory written by Init holds the root's private key; it is a
// development artefact and must never be trusted by a production broker.
package tdxsim
