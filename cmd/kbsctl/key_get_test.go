package main

import (
	"encoding/json"
	"regexp"
	"testing"
)

func TestKeyGet(t *testing.T) {
	b := startBroker(t)
	b.mustRun(t, "key", "create", "k", "--description", "weights", "--label", "team=ml", "--label", "env=dev")
	b.mustRun(t, "key", "rotate", "k")
	b.mustRun(t, "key", "disable", "k", "--version", "1")
	r := b.run(t, "auditor", "key", "get", "k")
	if r.code != exitOK {
		t.Fatalf("key get: %v", r)
	}
	for _, re := range []string{
		`(?m)^key: +k$`,
		`(?m)^algorithm: +AES-256-GCM$`,
		`(?m)^state: +enabled$`,
		`(?m)^primary version: +2$`,
		`(?m)^policy: +none \(every release is denied until 'kbsctl policy put'\)$`,
		`(?m)^description: +weights$`,
		`(?m)^labels: +env=dev, team=ml$`,
		`(?m)^created: +\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$`,
		`(?m)^  VERSION +STATE +ORIGIN +CREATED +UPDATED`,
		`(?m)^  1 +disabled +generated +\S+Z +\S+Z$`,
		`(?m)^  2 \(primary\) +enabled +generated +\S+Z +\S+Z$`,
	} {
		if !regexp.MustCompile(re).MatchString(r.stdout) {
			t.Errorf("output lacks %s:\n%s", re, r.stdout)
		}
	}
	if regexp.MustCompile(`(?m)^destroyed:`).MatchString(r.stdout) {
		t.Errorf("a live key shows a destroy time:\n%s", r.stdout)
	}

	r = b.mustRun(t, "key", "get", "k", "--json")
	var got struct {
		KeyID    string            `json:"key_id"`
		Labels   map[string]string `json:"labels"`
		Versions []struct {
			State string `json:"state"`
		} `json:"versions"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
		t.Fatalf("--json: %v\n%s", err, r.stdout)
	}
	if got.KeyID != "k" || got.Labels["team"] != "ml" || len(got.Versions) != 2 || got.Versions[0].State != "KEY_VERSION_STATE_DISABLED" {
		t.Errorf("--json: %+v", got)
	}
}

func TestKeyGetErrors(t *testing.T) {
	b := startBroker(t)
	b.check(t, []cliCase{
		{"admin", []string{"key", "get", "missing"}, exitFailure, "key get missing: no such key (key_not_found, request id "},
		{"admin", []string{"key", "get", "missing"}, exitFailure, "; 'kbsctl key list' lists the keys"},
		{"admin", []string{"key", "get", "a/b"}, exitUsage, `key get: ID "a/b": character 2 is not allowed`},
		{"loader", []string{"key", "get", "missing"}, exitRefused, "not_authorized"},
	})
}
