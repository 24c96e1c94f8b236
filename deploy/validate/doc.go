// Package validate checks the project's Kubernetes deployment files: the
// manifests rendered from the Helm charts, the plain examples, the SPIRE
// registrations and the Dockerfiles.
//
// Usage (what scripts/check-deploy.sh runs):
//
//	CML_RENDERED_DIR=/tmp/rendered go test ./...      # in deploy/validate
//
// where /tmp/rendered holds one `helm template` output per chart and values
// file, named <chart>--<values>.yaml. The examples (deploy/examples, deploy/spire)
// and the Dockerfiles (deploy/docker) are checked from the repository itself.
//
// Decoding is strict: every YAML document is converted to JSON and decoded
// into its k8s.io/api type chosen by apiVersion and kind, with unknown and
// duplicate fields rejected and field names matched case-sensitively
// ([DecodeStrict]); an unknown kind is an error. The ClusterSPIFFEID of
// spire-controller-manager, which k8s.io/api lacks, decodes into a local
// struct with the fields this project uses.
//
// [CheckPodSpec] then enforces the Pod Security "restricted" settings on
// every container of every pod template, with one named exception: an init
// container that mounts configfs (/sys/kernel/config, for configfs-tsm TDX
// quotes) may run as UID 0, because the kernel creates each report entry
// owned by root with a 0200 inblob. [CheckBroker] and [CheckInference] add
// the checks specific to the key broker and to an inference workload with
// the loader, and [CheckDockerfile] those of the image builds.
//
// This is its own Go module so that k8s.io/api stays out of the project's
// go.mod.
package validate
