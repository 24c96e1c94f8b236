package client_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/cml-project/cml/client"
	kbsv1 "github.com/cml-project/cml/proto/cml/kbs/v1"
	"github.com/cml-project/cml/tdx/quote"
)

// A workload in a TD releases its model key: SVID from the SPIRE agent,
// quote from configfs-tsm, retries while the broker is not up yet.
func ExampleClient_ReleaseKey() {
	ctx := context.Background()
	c, err := client.New(ctx, "kbs.cml-system:8443",
		client.WithWorkloadAPI("unix:///run/spire/agent-sockets/agent.sock"),
		client.WithServerID(spiffeid.RequireFromString("spiffe://example.org/ns/cml-system/sa/kbs")),
		client.WithTimeout(30*time.Second),
		client.WithRetry(5*time.Minute),
	)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	qp, err := quote.NewConfigFS()
	if err != nil {
		log.Fatal(err)
	}
	key, err := c.ReleaseKey(ctx, "llama-3-8b", 1, qp)
	var denied *client.DeniedError
	switch {
	case errors.As(err, &denied):
		log.Fatalf("refused: %s (audit request %s)", denied.Reason, denied.RequestID)
	case err != nil:
		log.Fatal(err)
	}
	defer key.Zero()
	fmt.Println("released", key.KeyID, "version", key.Version)
}

// kbsctl: an administrator's calls go through the raw AdminService client.
func ExampleClient_Admin() {
	ctx := context.Background()
	c, err := client.New(ctx, "kbs.cml-system:8443",
		client.WithSVIDFiles("admin.pem", "admin-key.pem", "ca.pem"),
		client.WithServerID(spiffeid.RequireFromString("spiffe://example.org/ns/cml-system/sa/kbs")),
	)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	resp, err := c.Admin().CreateKey(ctx, &kbsv1.CreateKeyRequest{KeyId: "llama-3-8b"})
	if err != nil {
		if reason, requestID, ok := client.ReasonOf(err); ok {
			log.Fatalf("create key: %s (request %s)", reason, requestID)
		}
		log.Fatal(err)
	}
	fmt.Println("created version", resp.GetKey().GetPrimaryVersion())
}
