package main

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"

	"google.golang.org/protobuf/reflect/protoreflect"

	kbsv1 "github.com/cml-project/cml/proto/cml/kbs/v1"
)

// Helpers shared by the key commands.

// enumWord prints an enum value without its prefix, in lowercase:
// KEY_STATE_ENABLED → "enabled". An unknown value prints its number.
func enumWord(v protoreflect.Enum, prefix string) string {
	d := v.Descriptor().Values().ByNumber(v.Number())
	if d == nil {
		return strconv.Itoa(int(v.Number()))
	}
	return strings.ToLower(strings.TrimPrefix(string(d.Name()), prefix))
}

func keyState(s kbsv1.KeyState) string { return enumWord(s, "KEY_STATE_") }

func versionState(s kbsv1.KeyVersionState) string { return enumWord(s, "KEY_VERSION_STATE_") }

func keyOrigin(o kbsv1.KeyOrigin) string { return enumWord(o, "KEY_ORIGIN_") }

// algorithmName prints a key algorithm as people write it.
func algorithmName(a kbsv1.KeyAlgorithm) string {
	if a == kbsv1.KeyAlgorithm_KEY_ALGORITHM_AES_256_GCM {
		return "AES-256-GCM"
	}
	return enumWord(a, "KEY_ALGORITHM_")
}

// policyWord describes a key's policy version.
func policyWord(v uint32) string {
	if v == 0 {
		return "none"
	}
	return fmt.Sprintf("version %d", v)
}

// formatLabels prints labels sorted by key: "env=prod, team=ml".
func formatLabels(labels map[string]string) string {
	if len(labels) == 0 {
		return "-"
	}
	parts := make([]string, 0, len(labels))
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		parts = append(parts, k+"="+labels[k])
	}
	return strings.Join(parts, ", ")
}

// printKey prints a key's metadata and versions for people.
func printKey(w io.Writer, k *kbsv1.KeyMetadata) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "key:\t%s\n", sanitize(k.GetKeyId()))
	fmt.Fprintf(tw, "algorithm:\t%s\n", algorithmName(k.GetAlgorithm()))
	fmt.Fprintf(tw, "state:\t%s\n", keyState(k.GetState()))
	fmt.Fprintf(tw, "primary version:\t%d\n", k.GetPrimaryVersion())
	pol := policyWord(k.GetPolicyVersion())
	if k.GetPolicyVersion() == 0 {
		pol += " (every release is denied until 'kbsctl policy put')"
	}
	fmt.Fprintf(tw, "policy:\t%s\n", pol)
	if d := k.GetDescription(); d != "" {
		fmt.Fprintf(tw, "description:\t%s\n", sanitize(d))
	}
	fmt.Fprintf(tw, "labels:\t%s\n", sanitize(formatLabels(k.GetLabels())))
	fmt.Fprintf(tw, "created:\t%s\n", formatTS(k.GetCreateTime()))
	fmt.Fprintf(tw, "updated:\t%s\n", formatTS(k.GetUpdateTime()))
	if k.GetDestroyTime() != nil {
		fmt.Fprintf(tw, "destroyed:\t%s\n", formatTS(k.GetDestroyTime()))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w, "versions:")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  VERSION\tSTATE\tORIGIN\tCREATED\tUPDATED")
	for _, v := range k.GetVersions() {
		version := strconv.FormatUint(uint64(v.GetVersion()), 10)
		if v.GetVersion() == k.GetPrimaryVersion() {
			version += " (primary)"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", version, versionState(v.GetState()), keyOrigin(v.GetOrigin()),
			formatTS(v.GetCreateTime()), formatTS(v.GetUpdateTime()))
	}
	return tw.Flush()
}

// validKeyID checks the key id syntax locally (types.proto), so that a typo
// is a usage error before any connection is made.
func validKeyID(what, id string) error {
	if id == "" || len(id) > 128 {
		return usagef("%s %q: a key id is 1 to 128 characters of [A-Za-z0-9._-]", what, id)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			return usagef("%s %q: character %d is not allowed; a key id is 1 to 128 characters of [A-Za-z0-9._-]", what, sanitize(id), i+1)
		}
	}
	return nil
}

// versionSuffix names a version in an operation: " --version 2", or ""
// for the whole key.
func versionSuffix(v uint32) string {
	if v == 0 {
		return ""
	}
	return fmt.Sprintf(" --version %d", v)
}
