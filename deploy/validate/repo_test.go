package validate

import (
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
)

// repoRoot is the repository root, relative to this package's directory.
const repoRoot = "../.."

// renderedEnv names the directory of `helm template` outputs, set by
// scripts/check-deploy.sh.
const renderedEnv = "CML_RENDERED_DIR"

// TestRendered checks every chart rendering: strict decoding, the restricted
// settings on every pod template, and the broker or inference checks by
// chart (file names are <chart>--<values>.yaml).
func TestRendered(t *testing.T) {
	dir := os.Getenv(renderedEnv)
	if dir == "" {
		t.Skipf("%s is unset: run scripts/check-deploy.sh, which renders the Helm charts and sets it", renderedEnv)
	}
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("%s=%s holds no *.yaml renderings (err %v)", renderedEnv, dir, err)
	}
	for _, f := range files {
		chart, _, ok := strings.Cut(filepath.Base(f), "--")
		if !ok {
			t.Errorf("%s: name is not <chart>--<values>.yaml", f)
			continue
		}
		t.Run(filepath.Base(f), func(t *testing.T) {
			objs := decodeFile(t, f)
			switch chart {
			case "cml":
				checkBrokerObjects(t, objs)
			case "cml-inference-example":
				checkInferenceObjects(t, objs)
			default:
				t.Fatalf("no checks for chart %q", chart)
			}
		})
	}
}

// TestExamples checks the plain manifests in deploy/examples.
func TestExamples(t *testing.T) {
	files := glob(t, "deploy/examples/*.yaml")
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			objs := decodeFile(t, f)
			checkPods(t, objs)
			if filepath.Base(f) == "vllm.yaml" {
				checkInferenceObjects(t, objs)
			}
		})
	}
}

// TestSPIRE checks the ClusterSPIFFEID registrations in deploy/spire.
func TestSPIRE(t *testing.T) {
	for _, f := range glob(t, "deploy/spire/*.yaml") {
		t.Run(filepath.Base(f), func(t *testing.T) {
			n := 0
			for _, o := range decodeFile(t, f) {
				c, ok := o.Value.(*ClusterSPIFFEID)
				if !ok {
					t.Errorf("%s: %s %s is not a ClusterSPIFFEID", f, o.GVK.Kind, o.Name)
					continue
				}
				n++
				if err := CheckClusterSPIFFEID(c); err != nil {
					t.Error(err)
				}
			}
			if n == 0 {
				t.Errorf("%s: no ClusterSPIFFEID", f)
			}
		})
	}
}

// TestDockerfiles checks deploy/docker/<name>.Dockerfile for each binary.
func TestDockerfiles(t *testing.T) {
	for _, name := range []string{"kbs", "kbsctl", "cml-loader"} {
		t.Run(name, func(t *testing.T) {
			f := filepath.Join(repoRoot, "deploy", "docker", name+".Dockerfile")
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			if err := CheckDockerfile(name, data, repoRoot); err != nil {
				t.Error(err)
			}
		})
	}
}

func glob(t *testing.T, pattern string) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(repoRoot, filepath.FromSlash(pattern)))
	if err != nil || len(files) == 0 {
		t.Fatalf("%s: no files (err %v)", pattern, err)
	}
	sort.Strings(files)
	return files
}

func decodeFile(t *testing.T, f string) []Object {
	t.Helper()
	data, err := os.ReadFile(f)
	if err != nil {
		t.Fatal(err)
	}
	objs, err := DecodeAll(f, data)
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) == 0 {
		t.Fatalf("%s: no objects", f)
	}
	return objs
}

// checkPods runs CheckPodSpec on every pod template and returns how many.
func checkPods(t *testing.T, objs []Object) int {
	t.Helper()
	n := 0
	for _, o := range objs {
		spec, _, ok := PodTemplate(o)
		if !ok {
			continue
		}
		n++
		if err := CheckPodSpec(o.GVK.Kind+" "+o.Name, spec); err != nil {
			t.Error(err)
		}
	}
	return n
}

func checkBrokerObjects(t *testing.T, objs []Object) {
	t.Helper()
	if n := checkPods(t, objs); n != 1 {
		t.Errorf("want exactly 1 pod template (the broker), got %d", n)
	}
	found := false
	for _, o := range objs {
		if s, ok := o.Value.(*appsv1.StatefulSet); ok {
			found = true
			if err := CheckBroker(s); err != nil {
				t.Error(err)
			}
		}
		if c, ok := o.Value.(*ClusterSPIFFEID); ok {
			if err := CheckClusterSPIFFEID(c); err != nil {
				t.Error(err)
			}
		}
	}
	if !found {
		t.Error("no StatefulSet")
	}
}

func checkInferenceObjects(t *testing.T, objs []Object) {
	t.Helper()
	n := 0
	for _, o := range objs {
		spec, _, ok := PodTemplate(o)
		if !ok {
			continue
		}
		n++
		if err := CheckPodSpec(o.GVK.Kind+" "+o.Name, spec); err != nil {
			t.Error(err)
		}
		if err := CheckInference(o.GVK.Kind+" "+o.Name, spec); err != nil {
			t.Error(err)
		}
	}
	if n == 0 {
		t.Error("no pod template with the loader")
	}
}
