package client_test

import (
	"github.com/cml-project/cml/client/clienttest"
	"github.com/cml-project/cml/tdx/quote"
	"github.com/cml-project/cml/tdx/tdxsim"
)

func simQuoter(b *clienttest.Broker, td tdxsim.TDParams) quote.Provider {
	return quote.NewSimulated(b.Sim, td)
}
