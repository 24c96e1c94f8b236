package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/reflect/protoreflect"

	kbsv1 "github.com/cml-project/cml/proto/cml/kbs/v1"
)

// Helpers shared by the policy commands.

// maxPolicyFileSize bounds a policy file. A policy with every list at its
// limit of 256 entries of 96 hex digits is about 250 KiB.
const maxPolicyFileSize = 1 << 20

// outputOnlyPolicyFields are set by the broker; a file may carry them (it
// came from 'kbsctl policy get') and they are ignored.
var outputOnlyPolicyFields = map[protoreflect.Name]bool{"key_id": true, "version": true, "create_time": true, "created_by": true}

// policyFieldNames lists the fields a policy file sets, for error messages.
func policyFieldNames() string {
	fields := (&kbsv1.Policy{}).ProtoReflect().Descriptor().Fields()
	var names []string
	for i := range fields.Len() {
		if n := fields.Get(i).Name(); !outputOnlyPolicyFields[n] {
			names = append(names, string(n))
		}
	}
	return strings.Join(names, ", ")
}

// parsePolicy decodes a policy file: the protojson form of kbsv1.Policy
// (proto field names or their lowerCamelCase JSON names). Unknown fields are
// an error that names the field. src names the input in errors.
func parsePolicy(src string, data []byte) (*kbsv1.Policy, error) {
	if strings.TrimSpace(string(data)) == "" {
		return nil, fmt.Errorf("%s: the file is empty; a policy is a JSON object such as {\"spiffe_ids\": [\"spiffe://example.org/loader\"], \"mrtd\": [\"<96 hex digits>\"]}", src)
	}
	p := &kbsv1.Policy{}
	if err := (protojson.UnmarshalOptions{}).Unmarshal(data, p); err != nil {
		msg := strings.TrimPrefix(strings.TrimPrefix(err.Error(), "proto:"), "\u00a0")
		msg = strings.TrimSpace(msg)
		fix := "a policy file is the JSON form of cml.kbs.v1.Policy (see 'kbsctl policy get' or docs/kbsctl.md)"
		if strings.Contains(msg, "unknown field") {
			fix = "the policy fields are " + policyFieldNames()
		}
		return nil, fmt.Errorf("%s: %s; %s", src, msg, fix)
	}
	return p, nil
}

// readPolicyFile reads and decodes the policy file at path ("-": stdin),
// named in errors as flagName.
func readPolicyFile(e *env, flagName, path string) (*kbsv1.Policy, error) {
	src := flagName + " " + path
	var r io.Reader
	if path == "-" {
		r = e.stdin
		src = flagName + " - (stdin)"
	} else {
		f, err := os.Open(path)
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%s: no such file; write one first ('kbsctl policy get --key ID > %s' gives the current policy)", src, path)
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", src, unwrapPathError(err))
		}
		defer f.Close()
		r = f
	}
	data, err := io.ReadAll(io.LimitReader(r, maxPolicyFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", src, unwrapPathError(err))
	}
	if len(data) > maxPolicyFileSize {
		return nil, fmt.Errorf("%s: larger than %d bytes; this is not a policy file", src, maxPolicyFileSize)
	}
	return parsePolicy(src, data)
}

// pinnedFields names the TD measurement lists a policy constrains.
func pinnedFields(p *kbsv1.Policy) string {
	var names []string
	for _, f := range []struct {
		name string
		vals []string
	}{
		{"mrtd", p.GetMrtd()}, {"rtmr0", p.GetRtmr0()}, {"rtmr1", p.GetRtmr1()}, {"rtmr2", p.GetRtmr2()},
		{"rtmr3", p.GetRtmr3()}, {"mr_config_id", p.GetMrConfigId()}, {"mr_owner", p.GetMrOwner()},
		{"mr_owner_config", p.GetMrOwnerConfig()}, {"mr_seam", p.GetMrSeam()},
	} {
		if len(f.vals) > 0 {
			names = append(names, f.name)
		}
	}
	if len(names) == 0 {
		return "none (unpinned)"
	}
	return strings.Join(names, ",")
}

// policyHint is the usual fix for failures about a key's policy.
func policyHint(reason string) string {
	switch reason {
	case "key_not_found":
		return "'kbsctl key list' lists the keys"
	case "no_policy":
		return "put one with 'kbsctl policy put --key ID --file policy.json'"
	}
	return keyHint(reason)
}
