// Package quote obtains TDX quotes inside a TD, for the loader.
//
//	var p quote.Provider
//	p, err := quote.NewConfigFS()           // production: Linux ≥ 6.7 configfs-tsm
//	p = quote.NewSimulated(sim, sim.DefaultTD()) // development and tests only
//
//	q, err := p.GetQuote(ctx, reportData)   // reportData binds the quote to the request
//
// The configfs-tsm provider writes REPORTDATA to a fresh entry under
// /sys/kernel/config/tsm/report, reads the quote back (the kernel has the
// TDX module produce a TD report and the host's quoting service sign it),
// and checks the entry's generation counter so a concurrent writer cannot
// substitute its own request. It refuses a provider other than tdx_guest,
// an empty quote, and anything that is not a TDX quote v4.
//
// The simulated provider signs with a tdxsim.Simulator; its quotes verify
// only where the simulator's root is explicitly trusted. It is never
// selected implicitly: a caller must construct it by name.
package quote
