{{/* Names, labels and the values derived from several settings, shared by every template. */}}

{{- define "vmta-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "vmta-operator.fullname" -}}
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

{{- define "vmta-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "vmta-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "vmta-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "vmta-operator.labels" -}}
helm.sh/chart: {{ include "vmta-operator.chart" . }}
{{ include "vmta-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: vmta
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "vmta-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "vmta-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* repository:tag, or repository@digest when a digest is pinned. */}}
{{- define "vmta-operator.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Namespaces the operator watches in namespace scope: the listed ones, or the release's. */}}
{{- define "vmta-operator.watchedNamespaces" -}}
{{- if .Values.rbac.namespaces }}
{{- join "," .Values.rbac.namespaces }}
{{- else }}
{{- .Release.Namespace }}
{{- end }}
{{- end }}

{{/*
The operator's permissions on watched namespaces. Mirror of the authoritative list in the
operator's code (operator/ on branch opruntime): keep the two in step.
Secrets are read to check that referenced Secrets and keys exist and to hash them for rollouts;
RBAC cannot narrow a read to names and keys, so the operator never copies secret values into
ConfigMaps or logs (relay pods mount the Secrets themselves).
*/}}
{{- define "vmta-operator.rules" -}}
- apiGroups: ["vmta.dev"]
  resources: ["smtplisteners", "relaypolicies", "virtualmtapools"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["vmta.dev"]
  resources: ["smtplisteners/status", "relaypolicies/status", "virtualmtapools/status"]
  verbs: ["get", "update", "patch"]
- apiGroups: [""]
  resources: ["configmaps", "services"]
  verbs: ["get", "list", "watch", "create", "patch", "update", "delete"]
- apiGroups: ["apps"]
  resources: ["statefulsets", "deployments"]
  verbs: ["get", "list", "watch", "create", "patch", "update", "delete"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["get", "list", "watch", "create", "patch", "update", "delete"]
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "list", "watch"]
- apiGroups: [""]
  resources: ["pods", "persistentvolumeclaims"]
  verbs: ["get", "list", "watch"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}
