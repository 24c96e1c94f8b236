package validate

import (
	"errors"
	"fmt"
	"path"
	"slices"
	"strconv"
	"strings"
	"text/template"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
)

// configfsPath is where the kernel mounts configfs; configfs-tsm quotes are
// requested under its tsm/report directory (go-configfs-tsm hard-codes it).
const configfsPath = "/sys/kernel/config"

// spireSocketDirs are the hostPath directories a pod may mount for the SPIRE
// agent's Workload API socket (read-only).
var spireSocketDirs = []string{"/run/spire/agent-sockets", "/run/spire/sockets"}

func joinErrors(errs []error) error { return errors.Join(errs...) }

// CheckPodSpec enforces, for the pod template named name, the Pod Security
// "restricted" container settings on every container, resource requests,
// no service-account token, no host namespaces, and hostPath volumes only
// for configfs (init containers) and the SPIRE socket (read-only).
func CheckPodSpec(name string, spec *corev1.PodSpec) error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: "+format, append([]any{name}, args...)...))
	}
	if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
		bad("automountServiceAccountToken must be false")
	}
	if spec.HostNetwork || spec.HostPID || spec.HostIPC {
		bad("host namespaces (hostNetwork/hostPID/hostIPC) are not allowed")
	}
	hostPaths := map[string]string{} // volume name → host path
	for _, v := range spec.Volumes {
		if v.HostPath == nil {
			continue
		}
		p := path.Clean(v.HostPath.Path)
		if p != configfsPath && !slices.Contains(spireSocketDirs, p) {
			bad("volume %q: hostPath %s is not allowed (only %s and the SPIRE socket directory)", v.Name, p, configfsPath)
		}
		hostPaths[v.Name] = p
	}
	psc := spec.SecurityContext
	if psc == nil {
		psc = &corev1.PodSecurityContext{}
	}
	type ctr struct {
		c    *corev1.Container
		init bool
	}
	var all []ctr
	for i := range spec.InitContainers {
		all = append(all, ctr{&spec.InitContainers[i], true})
	}
	for i := range spec.Containers {
		all = append(all, ctr{&spec.Containers[i], false})
	}
	if len(spec.Containers) == 0 {
		bad("no containers")
	}
	for _, x := range all {
		c := x.c
		where := fmt.Sprintf("container %q", c.Name)
		if x.init {
			where = fmt.Sprintf("initContainer %q", c.Name)
		}
		configfs := false
		for _, m := range c.VolumeMounts {
			switch hp, ok := hostPaths[m.Name]; {
			case !ok:
			case hp == configfsPath:
				configfs = true
				if !x.init {
					bad("%s mounts configfs; only the loader initContainer may", where)
				}
			default: // SPIRE socket directory
				if !m.ReadOnly {
					bad("%s mounts the SPIRE socket hostPath %q writable", where, m.Name)
				}
			}
		}
		sc := c.SecurityContext
		if sc == nil {
			bad("%s has no securityContext", where)
			continue
		}
		if c.Image == "" {
			bad("%s has no image", where)
		}
		// The effective value is the container's, else the pod's.
		nonRoot := sc.RunAsNonRoot
		if nonRoot == nil {
			nonRoot = psc.RunAsNonRoot
		}
		uid := sc.RunAsUser
		if uid == nil {
			uid = psc.RunAsUser
		}
		switch {
		case nonRoot != nil && *nonRoot:
			if uid != nil && *uid == 0 {
				bad("%s sets runAsNonRoot with runAsUser 0", where)
			}
		case configfs && uid != nil && *uid == 0:
			// The documented exception: configfs-tsm needs UID 0.
		default:
			bad("%s must set runAsNonRoot: true (only a configfs initContainer may run as UID 0, and must say runAsUser: 0)", where)
		}
		if sc.Privileged != nil && *sc.Privileged {
			bad("%s is privileged", where)
		}
		if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
			bad("%s must set allowPrivilegeEscalation: false", where)
		}
		if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
			bad("%s must set readOnlyRootFilesystem: true", where)
		}
		seccomp := sc.SeccompProfile
		if seccomp == nil {
			seccomp = psc.SeccompProfile
		}
		if seccomp == nil || seccomp.Type != corev1.SeccompProfileTypeRuntimeDefault {
			bad("%s must use seccompProfile RuntimeDefault", where)
		}
		if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
			bad("%s must drop capabilities ALL", where)
		} else if len(sc.Capabilities.Add) > 0 {
			bad("%s adds capabilities %v", where, sc.Capabilities.Add)
		}
		if ap := sc.AppArmorProfile; ap != nil && ap.Type == corev1.AppArmorProfileTypeUnconfined && !configfs {
			bad("%s is AppArmor-unconfined; only the configfs initContainer may be", where)
		}
		for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
			if _, ok := c.Resources.Requests[r]; !ok {
				bad("%s has no %s request", where, r)
			}
		}
	}
	return joinErrors(errs)
}

// CheckBroker checks the key broker's StatefulSet: one replica, native gRPC
// liveness and readiness probes, a data PVC, and the KEK from a Secret:
// CML_KEK through a secretKeyRef, or a volume mounted read-only with mode
// 0400 and passed as --kek-file.
func CheckBroker(s *appsv1.StatefulSet) error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("StatefulSet %s: "+format, append([]any{s.Name}, args...)...))
	}
	if s.Spec.Replicas == nil || *s.Spec.Replicas != 1 {
		bad("replicas must be exactly 1 (bbolt is single-writer)")
	}
	spec := &s.Spec.Template.Spec
	i := slices.IndexFunc(spec.Containers, func(c corev1.Container) bool { return c.Name == "kbs" })
	if i < 0 {
		bad("no container named kbs")
		return joinErrors(errs)
	}
	c := spec.Containers[i]
	for name, p := range map[string]*corev1.Probe{"liveness": c.LivenessProbe, "readiness": c.ReadinessProbe} {
		if p == nil || p.GRPC == nil {
			bad("kbs needs a native grpc %s probe", name)
			continue
		}
		if !slices.ContainsFunc(c.Ports, func(cp corev1.ContainerPort) bool {
			return cp.Name == "health" && cp.ContainerPort == p.GRPC.Port
		}) {
			bad("kbs %s probe port %d is not the container's health port", name, p.GRPC.Port)
		}
	}
	// kbs init --exist-ok must run first, on the same data directory and KEK.
	j := slices.IndexFunc(spec.InitContainers, func(c corev1.Container) bool { return c.Name == "kbs-init" })
	if j < 0 {
		bad("no kbs-init initContainer")
	} else {
		ic := spec.InitContainers[j]
		if len(ic.Args) == 0 || ic.Args[0] != "init" || !slices.Contains(ic.Args, "--exist-ok") {
			bad("kbs-init must run 'init ... --exist-ok', runs %q", ic.Args)
		}
		for _, f := range []string{"--data-dir", "--kek-file"} {
			if flagValue(ic.Args, f) != flagValue(c.Args, f) {
				bad("kbs-init and kbs disagree on %s", f)
			}
		}
	}
	checkChallengeLimits(c.Args, bad)
	if !slices.ContainsFunc(s.Spec.VolumeClaimTemplates, func(p corev1.PersistentVolumeClaim) bool { return p.Name == "data" }) {
		bad("no volumeClaimTemplate named data")
	}
	kek := -1
	for j, v := range spec.Volumes {
		if v.Name == "kek" {
			kek = j
		}
	}
	switch {
	case kek < 0:
		// kek.source=env: CML_KEK from a Secret, never a literal value.
		for _, ctr := range append([]corev1.Container{c}, spec.InitContainers...) {
			if ctr.Name != "kbs" && ctr.Name != "kbs-init" {
				continue
			}
			if !slices.ContainsFunc(ctr.Env, func(e corev1.EnvVar) bool {
				return e.Name == "CML_KEK" && e.Value == "" && e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil
			}) {
				bad("%s has neither a kek Secret volume nor CML_KEK from a secretKeyRef", ctr.Name)
			}
		}
	case spec.Volumes[kek].Secret == nil:
		bad("volume kek is not a Secret")
	default:
		if m := spec.Volumes[kek].Secret.DefaultMode; m == nil || *m != 0o400 {
			bad("the kek Secret volume needs defaultMode 0400")
		}
		if !slices.ContainsFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool { return m.Name == "kek" && m.ReadOnly }) {
			bad("kbs must mount the kek volume read-only")
		}
		if !slices.ContainsFunc(c.Args, func(a string) bool { return strings.HasPrefix(a, "--kek-file=") }) {
			bad("kbs is not given --kek-file")
		}
	}
	return joinErrors(errs)
}

// maxChallengesCeiling is kbs serve's upper bound on --max-challenges.
const maxChallengesCeiling = 1_000_000

// checkChallengeLimits reports, through bad, a kbs serve command line that
// does not bound the outstanding challenges explicitly or that kbs would
// refuse: both --max-challenges-per-caller and --max-challenges must be
// integers in [1, maxChallengesCeiling], the first at most the second.
func checkChallengeLimits(args []string, bad func(format string, args ...any)) {
	vals := map[string]int64{}
	for _, f := range []string{"--max-challenges-per-caller", "--max-challenges"} {
		v := flagValue(args, f)
		if v == "" {
			bad("kbs is not given %s", f)
			continue
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 1 || n > maxChallengesCeiling {
			bad("kbs %s=%s is not an integer in [1, %d]", f, v, maxChallengesCeiling)
			continue
		}
		vals[f] = n
	}
	perCaller, okP := vals["--max-challenges-per-caller"]
	total, okT := vals["--max-challenges"]
	if okP && okT && perCaller > total {
		bad("kbs --max-challenges-per-caller=%d exceeds --max-challenges=%d", perCaller, total)
	}
}

// IsLoader reports whether c is the cml-loader container.
func IsLoader(c *corev1.Container) bool {
	repo, _, _ := strings.Cut(c.Image, "@")
	if i := strings.LastIndex(repo, ":"); i > strings.LastIndex(repo, "/") {
		repo = repo[:i]
	}
	return path.Base(repo) == "cml-loader"
}

// CheckInference checks a pod template that runs cml-loader: the loader is
// an initContainer; its --src is on a read-only PVC mount; its --dst is on an
// emptyDir with medium Memory and a sizeLimit; every other container mounts
// that volume read-only.
func CheckInference(name string, spec *corev1.PodSpec) error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: "+format, append([]any{name}, args...)...))
	}
	for i := range spec.Containers {
		if IsLoader(&spec.Containers[i]) {
			bad("cml-loader must be an initContainer, not container %q", spec.Containers[i].Name)
		}
	}
	var loader *corev1.Container
	for i := range spec.InitContainers {
		if IsLoader(&spec.InitContainers[i]) {
			loader = &spec.InitContainers[i]
		}
	}
	if loader == nil {
		bad("no cml-loader initContainer")
		return joinErrors(errs)
	}
	volumes := map[string]*corev1.Volume{}
	for i := range spec.Volumes {
		volumes[spec.Volumes[i].Name] = &spec.Volumes[i]
	}
	src, dst := flagValue(loader.Args, "--src"), flagValue(loader.Args, "--dst")
	if src == "" || dst == "" {
		bad("loader needs --src and --dst")
		return joinErrors(errs)
	}
	srcMount, dstMount := mountFor(loader, src), mountFor(loader, dst)
	switch {
	case srcMount == nil:
		bad("loader --src %s is on no volume mount", src)
	default:
		v := volumes[srcMount.Name]
		if !srcMount.ReadOnly {
			bad("loader mounts the encrypted volume %q writable", srcMount.Name)
		}
		if v == nil || v.PersistentVolumeClaim == nil || !v.PersistentVolumeClaim.ReadOnly {
			bad("encrypted volume %q must be a read-only PVC", srcMount.Name)
		}
	}
	if dstMount == nil {
		bad("loader --dst %s is on no volume mount", dst)
		return joinErrors(errs)
	}
	v := volumes[dstMount.Name]
	if v == nil || v.EmptyDir == nil || v.EmptyDir.Medium != corev1.StorageMediumMemory || v.EmptyDir.SizeLimit == nil || v.EmptyDir.SizeLimit.IsZero() {
		bad("model volume %q must be an emptyDir with medium Memory and a sizeLimit", dstMount.Name)
	}
	for _, c := range spec.Containers {
		for _, m := range c.VolumeMounts {
			if m.Name == dstMount.Name && !m.ReadOnly {
				bad("container %q mounts the plaintext model volume writable", c.Name)
			}
		}
	}
	return joinErrors(errs)
}

// CheckClusterSPIFFEID checks that a registration selects specific pods and
// namespaces and that its ID template parses and lives in the trust domain.
func CheckClusterSPIFFEID(c *ClusterSPIFFEID) error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("ClusterSPIFFEID %s: "+format, append([]any{c.Name}, args...)...))
	}
	t := c.Spec.SPIFFEIDTemplate
	if !strings.HasPrefix(t, "spiffe://{{ .TrustDomain }}/") {
		bad("spiffeIDTemplate %q must start with spiffe://{{ .TrustDomain }}/", t)
	}
	if _, err := template.New("id").Parse(t); err != nil {
		bad("spiffeIDTemplate: %v", err)
	}
	if sel := c.Spec.PodSelector; sel == nil || len(sel.MatchLabels)+len(sel.MatchExpressions) == 0 {
		bad("podSelector must select specific pods")
	}
	if sel := c.Spec.NamespaceSelector; sel == nil || len(sel.MatchLabels)+len(sel.MatchExpressions) == 0 {
		bad("namespaceSelector must select specific namespaces")
	}
	return joinErrors(errs)
}

// flagValue returns the value of --name=value or "--name value" in args.
func flagValue(args []string, name string) string {
	for i, a := range args {
		if v, ok := strings.CutPrefix(a, name+"="); ok {
			return v
		}
		if a == name && i+1 < len(args) {
			return args[i+1]
		}
	}
	return ""
}

// mountFor returns the mount of c whose path contains p (the deepest one).
func mountFor(c *corev1.Container, p string) *corev1.VolumeMount {
	var best *corev1.VolumeMount
	for i := range c.VolumeMounts {
		m := &c.VolumeMounts[i]
		mp := path.Clean(m.MountPath)
		if (p == mp || strings.HasPrefix(p, mp+"/")) && (best == nil || len(mp) > len(path.Clean(best.MountPath))) {
			best = m
		}
	}
	return best
}
