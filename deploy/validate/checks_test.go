package validate

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
)

// vllmExample is the example chart's rendering; the negative tests below
// each break one property of it and expect the check to name that property.
func vllmExample(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot, "deploy", "examples", "vllm.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// mustReplace replaces exactly one occurrence of old, so a test cannot pass
// because its edit silently stopped applying.
func mustReplace(t *testing.T, s, old, new string) string {
	t.Helper()
	if n := strings.Count(s, old); n != 1 {
		t.Fatalf("edit %q matches %d times, want 1", old, n)
	}
	return strings.Replace(s, old, new, 1)
}

// mustReplaceAll replaces every occurrence of old, of which there must be one.
func mustReplaceAll(t *testing.T, s, old, new string) string {
	t.Helper()
	if !strings.Contains(s, old) {
		t.Fatalf("edit %q matches nothing", old)
	}
	return strings.ReplaceAll(s, old, new)
}

func inferenceErrors(t *testing.T, manifest string) error {
	t.Helper()
	objs, err := DecodeAll("test", []byte(manifest))
	if err != nil {
		return err
	}
	var errs []error
	for _, o := range objs {
		if spec, _, ok := PodTemplate(o); ok {
			errs = append(errs, CheckPodSpec(o.Name, spec), CheckInference(o.Name, spec))
		}
	}
	return joinErrors(errs)
}

func TestInferenceChecksFail(t *testing.T) {
	base := vllmExample(t)
	if err := inferenceErrors(t, base); err != nil {
		t.Fatalf("the unmodified example must pass: %v", err)
	}
	cases := []struct {
		name, old, new, want string
	}{
		{"unknown field", "      enableServiceLinks: false\n", "      enableServiceLinks: false\n      enableServiceLink: false\n", "unknown field"},
		{"wrong-case field", "      enableServiceLinks: false\n", "      EnableServiceLinks: false\n", "unknown field"},
		{"duplicate field", "      enableServiceLinks: false\n", "      enableServiceLinks: false\n      enableServiceLinks: true\n", "already set"},
		{"unknown kind", "kind: Deployment\n", "kind: Deploymnt\n", "unknown kind"},
		{"tmpfs without medium", "            medium: Memory\n            sizeLimit: 20Gi\n", "            sizeLimit: 20Gi\n", "medium Memory"},
		{"tmpfs without size limit", "            medium: Memory\n            sizeLimit: 20Gi\n", "            medium: Memory\n", "sizeLimit"},
		{"writable encrypted mount", "              mountPath: /models-encrypted\n              readOnly: true\n", "              mountPath: /models-encrypted\n", "encrypted volume"},
		{"writable encrypted PVC", "            claimName: models-encrypted\n            readOnly: true\n", "            claimName: models-encrypted\n", "read-only PVC"},
		{"server writes plaintext", "              mountPath: /models\n              readOnly: true\n", "              mountPath: /models\n", "plaintext model volume writable"},
		{"server as root", "            runAsNonRoot: true\n            runAsUser: 65532\n", "            runAsNonRoot: false\n            runAsUser: 0\n", `container "vllm" must set runAsNonRoot`},
		{"writable root fs", "            runAsGroup: 65532\n            allowPrivilegeEscalation: false\n            readOnlyRootFilesystem: true\n", "            runAsGroup: 65532\n            allowPrivilegeEscalation: false\n            readOnlyRootFilesystem: false\n", "readOnlyRootFilesystem"},
		{"token mounted", "      automountServiceAccountToken: false\n", "", "automountServiceAccountToken"},
		{"extra hostPath", "            path: /sys/kernel/config\n", "            path: /var/lib\n", "hostPath /var/lib"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := inferenceErrors(t, mustReplace(t, base, c.old, c.new))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want an error containing %q", err, c.want)
			}
		})
	}
}

func TestLoaderMustBeInitContainer(t *testing.T) {
	base := vllmExample(t)
	// Move the loader into containers: it no longer runs before the server.
	m := mustReplace(t, base, "      initContainers:\n", "      containers:\n")
	m = mustReplace(t, m, "      containers:\n        - name: vllm\n", "        - name: vllm\n")
	err := inferenceErrors(t, m)
	if err == nil || !strings.Contains(err.Error(), "must be an initContainer") {
		t.Fatalf("got %v", err)
	}
}

func TestBrokerChecksFail(t *testing.T) {
	dir := os.Getenv(renderedEnv)
	if dir == "" {
		t.Skipf("%s is unset: run scripts/check-deploy.sh", renderedEnv)
	}
	rendered := func(values string) string {
		data, err := os.ReadFile(filepath.Join(dir, "cml--"+values+".yaml"))
		if err != nil {
			t.Fatal(err)
		}
		return string(data)
	}
	// The default passes the KEK as CML_KEK; ci/kek-file.yaml as a file.
	base, kekFile := rendered("default"), rendered("kek-file")
	cases := []struct{ name, base, old, new, want string }{
		{"two replicas", base, "  replicas: 1\n", "  replicas: 2\n", "replicas must be exactly 1"},
		{"no liveness", base, "          livenessProbe:\n            grpc:\n", "          livenessProbe:\n            tcpSocket:\n", "grpc liveness probe"},
		{"kek mode", kekFile, "            defaultMode: 0400\n", "            defaultMode: 0440\n", "defaultMode 0400"},
		{"caps kept", base, "              drop: [ALL]\n", "              drop: [NET_RAW]\n", "capabilities ALL"},
		{"escalation", base, "            allowPrivilegeEscalation: false\n", "            allowPrivilegeEscalation: true\n", "allowPrivilegeEscalation"},
		{"no seccomp", base, "          type: RuntimeDefault\n      initContainers:", "          type: Unconfined\n      initContainers:", "RuntimeDefault"},
		{"init on another dir", base, "            - --data-dir=/var/lib/kbs/data\n            - --exist-ok\n", "            - --data-dir=/var/lib/kbs\n            - --exist-ok\n", "disagree on --data-dir"},
		{"init on another kek file", kekFile, "            - --kek-file=/etc/kbs/kek/kek\n            - --exist-ok\n", "            - --kek-file=/etc/kbs/kek/other\n            - --exist-ok\n", "disagree on --kek-file"},
		{"no requests", base, "            requests:\n              cpu: 100m\n", "            requests:\n", "no cpu request"},
		{"no challenge bound", base, "            - --max-challenges=100000\n", "", "not given --max-challenges"},
		{"challenge bound too high", base, "            - --max-challenges=100000\n", "            - --max-challenges=1000001\n", "not an integer in [1, 1000000]"},
		{"challenge bound not a number", base, "            - --max-challenges-per-caller=16\n", "            - --max-challenges-per-caller=1e3\n", "not an integer"},
		{"per-caller above total", base, "            - --max-challenges=100000\n", "            - --max-challenges=8\n", "exceeds --max-challenges=8"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			// Both kbs-init and kbs share these settings: break them in both.
			m := mustReplaceAll(t, c.base, c.old, c.new)
			if c.name == "no seccomp" {
				m = mustReplaceAll(t, m, "            seccompProfile:\n              type: RuntimeDefault\n", "")
			}
			objs, err := DecodeAll("test", []byte(m))
			if err != nil {
				t.Fatal(err)
			}
			var errs []error
			for _, o := range objs {
				if s, ok := o.Value.(*appsv1.StatefulSet); ok {
					errs = append(errs, CheckPodSpec(s.Name, &s.Spec.Template.Spec), CheckBroker(s))
				}
			}
			err = joinErrors(errs)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want an error containing %q", err, c.want)
			}
		})
	}
}

func TestClusterSPIFFEIDChecksFail(t *testing.T) {
	base := `apiVersion: spire.spiffe.io/v1alpha1
kind: ClusterSPIFFEID
metadata:
  name: x
spec:
  spiffeIDTemplate: "spiffe://{{ .TrustDomain }}/ns/{{ .PodMeta.Namespace }}"
  namespaceSelector:
    matchLabels: {a: b}
  podSelector:
    matchLabels: {c: d}
`
	check := func(s string) error {
		o, err := DecodeStrict([]byte(s))
		if err != nil {
			return err
		}
		return CheckClusterSPIFFEID(o.Value.(*ClusterSPIFFEID))
	}
	if err := check(base); err != nil {
		t.Fatalf("base must pass: %v", err)
	}
	for name, c := range map[string][2]string{
		"any pod":           {"  podSelector:\n    matchLabels: {c: d}\n", "  podSelector: {}\n"},
		"foreign domain":    {"spiffe://{{ .TrustDomain }}/", "spiffe://other.org/"},
		"bad template":      {"{{ .PodMeta.Namespace }}", "{{ .PodMeta.Namespace "},
		"unknown CRD field": {"  podSelector:", "  federatesWithAll: true\n  podSelector:"},
	} {
		t.Run(name, func(t *testing.T) {
			if err := check(mustReplace(t, base, c[0], c[1])); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

func TestDockerfileChecksFail(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(repoRoot, "deploy", "docker", "kbs.Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	base := string(data)
	cases := []struct{ name, old, new, want string }{
		{"single stage", "FROM golang:1.26 AS build\n", "", "multi-stage"},
		{"root user", "USER 65532:65532\n", "USER root\n", "USER 65532:65532"},
		{"missing cmd", "./cmd/kbs\n", "./cmd/nope\n", "./cmd/nope has no Go files"},
		{"missing copy source", "COPY go.mod go.sum ./\n", "COPY go.mod go.sum vendor.txt ./\n", `"vendor.txt" does not exist`},
		{"copy source outside the context", "COPY go.mod go.sum ./\n", "COPY go.mod ../../go.sum ./\n", `"../../go.sum" leaves the build context`},
		{"cgo", "CGO_ENABLED=0 ", "", "CGO_ENABLED=0"},
		{"shell entrypoint", `ENTRYPOINT ["/kbs"]`, "ENTRYPOINT /kbs", "exec form"},
		{"run in final", "USER 65532:65532\n", "RUN true\nUSER 65532:65532\n", "no RUN"},
		{"fat final image", "gcr.io/distroless/static-debian12:nonroot", "debian:12", "final image"},
		{"copy from context in final", "COPY --from=build /out/kbs /kbs\n", "COPY go.mod /kbs\n", "only COPY --from"},
	}
	if err := CheckDockerfile("kbs", data, repoRoot); err != nil {
		t.Fatalf("base must pass: %v", err)
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := CheckDockerfile("kbs", []byte(mustReplace(t, base, c.old, c.new)), repoRoot)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want an error containing %q", err, c.want)
			}
		})
	}
}

func TestSplitDocuments(t *testing.T) {
	in := "# only a comment\n---\na: 1\n--- # trailing comment\n\n---\nb: 2\n...\n---   \n  # indented comment\n"
	docs := SplitDocuments([]byte(in))
	if len(docs) != 2 || docs[0].Line != 3 || docs[1].Line != 7 {
		t.Fatalf("got %+v", docs)
	}
}

func TestParseDockerfileContinuation(t *testing.T) {
	ins, err := ParseDockerfile([]byte("FROM a AS b\nRUN --mount=type=cache,target=/x \\\n  # note\n  echo 1 \\\n  && echo 2\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(ins) != 2 || ins[1].Line != 2 || len(ins[1].Flags) != 1 || ins[1].Args != "echo 1  && echo 2" {
		t.Fatalf("got %+v", ins)
	}
	for _, bad := range []string{"", "RUN a \\\n", "=nope\n"} {
		if _, err := ParseDockerfile([]byte(bad)); err == nil {
			t.Errorf("%q: accepted", bad)
		}
	}
}

func TestBrokerKEKFromEnvMustBeSecretRef(t *testing.T) {
	dir := os.Getenv(renderedEnv)
	if dir == "" {
		t.Skipf("%s is unset: run scripts/check-deploy.sh", renderedEnv)
	}
	data, err := os.ReadFile(filepath.Join(dir, "cml--collateral-pvc.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	literal := mustReplaceAll(t, string(data),
		"            - name: CML_KEK\n              valueFrom:\n                secretKeyRef:\n                  name: kbs-kek\n                  key: kek\n",
		"            - name: CML_KEK\n              value: \"00\"\n")
	for name, m := range map[string]string{"secretKeyRef": string(data), "literal": literal} {
		objs, err := DecodeAll(name, []byte(m))
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range objs {
			if s, ok := o.Value.(*appsv1.StatefulSet); ok {
				err := CheckBroker(s)
				if (err == nil) != (name == "secretKeyRef") {
					t.Errorf("%s: got %v", name, err)
				}
			}
		}
	}
}

// TestBrokerChallengeLimitsFromValues checks that the chart's challenges.*
// values reach kbs serve's command line: the default rendering carries
// kbs's own defaults and ci/challenge-limits.yaml its non-default values.
func TestBrokerChallengeLimitsFromValues(t *testing.T) {
	dir := os.Getenv(renderedEnv)
	if dir == "" {
		t.Skipf("%s is unset: run scripts/check-deploy.sh", renderedEnv)
	}
	for values, want := range map[string][2]string{
		"default":          {"16", "100000"},
		"challenge-limits": {"1000", "1000000"},
	} {
		objs := decodeFile(t, filepath.Join(dir, "cml--"+values+".yaml"))
		found := false
		for _, o := range objs {
			s, ok := o.Value.(*appsv1.StatefulSet)
			if !ok {
				continue
			}
			found = true
			for _, c := range s.Spec.Template.Spec.Containers {
				if c.Name != "kbs" {
					continue
				}
				if got := flagValue(c.Args, "--max-challenges-per-caller"); got != want[0] {
					t.Errorf("%s: --max-challenges-per-caller=%q, want %q", values, got, want[0])
				}
				if got := flagValue(c.Args, "--max-challenges"); got != want[1] {
					t.Errorf("%s: --max-challenges=%q, want %q", values, got, want[1])
				}
			}
		}
		if !found {
			t.Errorf("%s: no StatefulSet rendered", values)
		}
	}
}
