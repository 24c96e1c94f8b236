// Package client is the Go client of the key broker (kbs): the key release
// protocol for workloads in a TD and the admin service for kbsctl.
package client
