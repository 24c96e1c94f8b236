{{/* Chart name, truncated to the 63 characters a DNS label allows. */}}
{{- define "cml.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified name of the broker's objects (Service, ServiceAccount,
StatefulSet). values.yaml sets fullnameOverride=kbs so that the Service is
kbs.<namespace>.svc and the SPIFFE ID ends in /sa/kbs.
*/}}
{{- define "cml.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "cml.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels that select the broker's pods; never change after install. */}}
{{- define "cml.selectorLabels" -}}
app.kubernetes.io/name: {{ include "cml.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: key-broker
{{- end }}

{{- define "cml.labels" -}}
helm.sh/chart: {{ include "cml.chart" . }}
{{ include "cml.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: cml
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "cml.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/* The broker's own SPIFFE ID, from the namespace and ServiceAccount. */}}
{{- define "cml.spiffeID" -}}
{{- printf "spiffe://%s/ns/%s/sa/%s" .Values.trustDomain .Release.Namespace (include "cml.fullname" .) }}
{{- end }}

{{/* Fail rendering on values that would produce a broken or unsafe broker. */}}
{{- define "cml.validate" -}}
{{- if ne (int .Values.replicaCount) 1 }}
{{- fail "replicaCount must be 1: the bbolt keystore has a single writer (see values.yaml)" }}
{{- end }}
{{- if not (has .Values.kek.source (list "file" "env")) }}
{{- fail (printf "kek.source must be file or env, not %q" .Values.kek.source) }}
{{- end }}
{{- if and (eq .Values.kek.source "file") (not (kindIs "invalid" .Values.podSecurity.fsGroup)) }}
{{- fail "kek.source=file does not work with podSecurity.fsGroup set: kubelet makes the KEK file group-readable (kubernetes/kubernetes#57923) and kbs refuses it; use kek.source=env, or set podSecurity.fsGroup=null (values.yaml explains)" }}
{{- end }}
{{- if not .Values.kek.existingSecret }}
{{- fail "kek.existingSecret is required: create the KEK Secret first (docs/kubernetes.md)" }}
{{- end }}
{{- $mode := .Values.collateral.mode }}
{{- if eq $mode "pccs" }}
{{- if not .Values.collateral.pccs.url }}
{{- fail "collateral.pccs.url is required when collateral.mode=pccs" }}
{{- end }}
{{- if not .Values.collateral.pccs.caConfigMap }}
{{- fail "collateral.pccs.caConfigMap is required when collateral.mode=pccs (the CA the PCCS's TLS certificate chains to)" }}
{{- end }}
{{- else if eq $mode "dir" }}
{{- if eq (empty .Values.collateral.dir.configMap) (empty .Values.collateral.dir.existingClaim) }}
{{- fail "collateral.mode=dir needs exactly one of collateral.dir.configMap and collateral.dir.existingClaim" }}
{{- end }}
{{- else if ne $mode "pcs" }}
{{- fail (printf "collateral.mode must be pcs, pccs or dir, not %q" $mode) }}
{{- end }}
{{- if gt (int64 .Values.challenges.maxPerCaller) (int64 .Values.challenges.max) }}
{{- fail (printf "challenges.maxPerCaller (%d) must not exceed challenges.max (%d): kbs refuses it" (int64 .Values.challenges.maxPerCaller) (int64 .Values.challenges.max)) }}
{{- end }}
{{- if not (has .Values.spire.socketVolume (list "csi" "hostPath")) }}
{{- fail (printf "spire.socketVolume must be csi or hostPath, not %q" .Values.spire.socketVolume) }}
{{- end }}
{{- end }}

{{/* The restricted container securityContext of kbs and kbs-init. */}}
{{- define "cml.containerSecurityContext" -}}
runAsNonRoot: true
# No setuid binaries or file capabilities can raise privileges.
allowPrivilegeEscalation: false
# The image is one static binary; only the PVC and /tmp are writable.
readOnlyRootFilesystem: true
# The broker needs no Linux capability (it binds ports > 1024).
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* CML_KEK from the Secret (kek.source=env). */}}
{{- define "cml.kekEnvVar" -}}
- name: CML_KEK
  valueFrom:
    secretKeyRef:
      name: {{ .Values.kek.existingSecret }}
      key: {{ .Values.kek.key }}
{{- end }}
