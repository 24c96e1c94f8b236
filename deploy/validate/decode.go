package validate

import (
	"bytes"
	"fmt"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	sigsjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// Object is one decoded manifest: its type metadata, its name, and the typed
// value (e.g. *appsv1.StatefulSet, *ClusterSPIFFEID).
type Object struct {
	GVK   schema.GroupVersionKind
	Name  string
	Value any
}

// ClusterSPIFFEID is spire-controller-manager's spire.spiffe.io/v1alpha1
// ClusterSPIFFEID, with the spec fields this project uses; any other field
// fails strict decoding.
type ClusterSPIFFEID struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              ClusterSPIFFEIDSpec `json:"spec"`
}

// ClusterSPIFFEIDSpec is the subset of the CRD's spec used in deploy/.
type ClusterSPIFFEIDSpec struct {
	ClassName         string                `json:"className,omitempty"`
	SPIFFEIDTemplate  string                `json:"spiffeIDTemplate"`
	NamespaceSelector *metav1.LabelSelector `json:"namespaceSelector,omitempty"`
	PodSelector       *metav1.LabelSelector `json:"podSelector,omitempty"`
	DNSNameTemplates  []string              `json:"dnsNameTemplates,omitempty"`
	TTL               *metav1.Duration      `json:"ttl,omitempty"`
}

// kinds maps each accepted apiVersion/kind to a constructor of its type.
var kinds = map[schema.GroupVersionKind]func() any{
	corev1.SchemeGroupVersion.WithKind("Pod"):                                func() any { return new(corev1.Pod) },
	corev1.SchemeGroupVersion.WithKind("Service"):                            func() any { return new(corev1.Service) },
	corev1.SchemeGroupVersion.WithKind("ServiceAccount"):                     func() any { return new(corev1.ServiceAccount) },
	corev1.SchemeGroupVersion.WithKind("ConfigMap"):                          func() any { return new(corev1.ConfigMap) },
	corev1.SchemeGroupVersion.WithKind("Secret"):                             func() any { return new(corev1.Secret) },
	corev1.SchemeGroupVersion.WithKind("PersistentVolumeClaim"):              func() any { return new(corev1.PersistentVolumeClaim) },
	corev1.SchemeGroupVersion.WithKind("Namespace"):                          func() any { return new(corev1.Namespace) },
	appsv1.SchemeGroupVersion.WithKind("Deployment"):                         func() any { return new(appsv1.Deployment) },
	appsv1.SchemeGroupVersion.WithKind("StatefulSet"):                        func() any { return new(appsv1.StatefulSet) },
	appsv1.SchemeGroupVersion.WithKind("DaemonSet"):                          func() any { return new(appsv1.DaemonSet) },
	batchv1.SchemeGroupVersion.WithKind("Job"):                               func() any { return new(batchv1.Job) },
	batchv1.SchemeGroupVersion.WithKind("CronJob"):                           func() any { return new(batchv1.CronJob) },
	networkingv1.SchemeGroupVersion.WithKind("NetworkPolicy"):                func() any { return new(networkingv1.NetworkPolicy) },
	policyv1.SchemeGroupVersion.WithKind("PodDisruptionBudget"):              func() any { return new(policyv1.PodDisruptionBudget) },
	{Group: "spire.spiffe.io", Version: "v1alpha1", Kind: "ClusterSPIFFEID"}: func() any { return new(ClusterSPIFFEID) },
}

// Document is one YAML document of a multi-document stream, with the line
// (1-based) it starts on, for error messages.
type Document struct {
	Line int
	Data []byte
}

// SplitDocuments splits a YAML stream at lines that are exactly "---"
// (optionally followed by spaces or a comment) and drops documents that
// hold only comments and blank lines, as `helm template` emits them.
func SplitDocuments(data []byte) []Document {
	var docs []Document
	var cur bytes.Buffer
	start, content := 1, false
	flush := func() {
		if content {
			docs = append(docs, Document{Line: start, Data: bytes.Clone(cur.Bytes())})
		}
		cur.Reset()
		content = false
	}
	for i, line := range strings.SplitAfter(string(data), "\n") {
		trimmed := strings.TrimRight(line, " \t\r\n")
		if trimmed == "---" || strings.HasPrefix(trimmed, "--- ") || strings.HasPrefix(trimmed, "---\t") {
			flush()
			start = i + 2
			continue
		}
		if t := strings.TrimSpace(line); t != "" && !strings.HasPrefix(t, "#") {
			content = true
		}
		cur.WriteString(line)
	}
	flush()
	return docs
}

// DecodeStrict decodes one YAML document into the k8s.io/api type of its
// apiVersion and kind. Unknown kinds, unknown or duplicate fields and
// wrong-case field names are errors.
func DecodeStrict(doc []byte) (Object, error) {
	js, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return Object{}, fmt.Errorf("validate: yaml: %w", err)
	}
	var tm metav1.TypeMeta
	if err := sigsjson.UnmarshalCaseSensitivePreserveInts(js, &tm); err != nil {
		return Object{}, fmt.Errorf("validate: reading apiVersion/kind: %w", err)
	}
	if tm.APIVersion == "" || tm.Kind == "" {
		return Object{}, fmt.Errorf("validate: document without apiVersion or kind")
	}
	gvk := schema.FromAPIVersionAndKind(tm.APIVersion, tm.Kind)
	newObj, ok := kinds[gvk]
	if !ok {
		return Object{}, fmt.Errorf("validate: unknown kind %s %s (not in the accepted list)", tm.APIVersion, tm.Kind)
	}
	v := newObj()
	strict, err := sigsjson.UnmarshalStrict(js, v, sigsjson.DisallowDuplicateFields, sigsjson.DisallowUnknownFields)
	if err != nil {
		return Object{}, fmt.Errorf("validate: %s: %w", tm.Kind, err)
	}
	if len(strict) > 0 {
		return Object{}, fmt.Errorf("validate: %s: %w", tm.Kind, joinErrors(strict))
	}
	name := ""
	if m, ok := v.(metav1.Object); ok {
		name = m.GetName()
	}
	if name == "" {
		return Object{}, fmt.Errorf("validate: %s without metadata.name", tm.Kind)
	}
	return Object{GVK: gvk, Name: name, Value: v}, nil
}

// DecodeAll decodes every document of a stream; errors name the source and
// the document's first line.
func DecodeAll(source string, data []byte) ([]Object, error) {
	var objs []Object
	var errs []error
	for _, d := range SplitDocuments(data) {
		o, err := DecodeStrict(d.Data)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s:%d: %w", source, d.Line, err))
			continue
		}
		objs = append(objs, o)
	}
	return objs, joinErrors(errs)
}

// PodTemplate returns the pod spec of a workload object and whether it has one.
func PodTemplate(o Object) (*corev1.PodSpec, *metav1.ObjectMeta, bool) {
	switch v := o.Value.(type) {
	case *corev1.Pod:
		return &v.Spec, &v.ObjectMeta, true
	case *appsv1.Deployment:
		return &v.Spec.Template.Spec, &v.Spec.Template.ObjectMeta, true
	case *appsv1.StatefulSet:
		return &v.Spec.Template.Spec, &v.Spec.Template.ObjectMeta, true
	case *appsv1.DaemonSet:
		return &v.Spec.Template.Spec, &v.Spec.Template.ObjectMeta, true
	case *batchv1.Job:
		return &v.Spec.Template.Spec, &v.Spec.Template.ObjectMeta, true
	case *batchv1.CronJob:
		return &v.Spec.JobTemplate.Spec.Template.Spec, &v.Spec.JobTemplate.Spec.Template.ObjectMeta, true
	}
	return nil, nil, false
}
