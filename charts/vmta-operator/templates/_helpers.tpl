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
The operator's permissions on watched namespaces: exactly OPERATOR_PERMISSIONS of
operator/kube/resources.ts, the list the operator's client enforces (test/chart/rbac-sync.test.ts
fails when they differ), less the Lease rule, which rbac.yaml grants in the release namespace only.
Owned objects are applied with server-side apply (patch), read through informers (list, watch)
and pruned (delete: Services and workloads only; a pool's ConfigMap and PodDisruptionBudget
live as long as the pool and go with it by garbage collection). Secrets are only listed and watched, to check that the Secrets and keys a
resource names exist; RBAC cannot narrow that to names and keys, so it is the operator's promise
never to copy secret values into ConfigMaps, status or logs (relay pods mount the Secrets).
*/}}
{{- define "vmta-operator.rules" -}}
- apiGroups: ["vmta.dev"]
  resources: ["smtplisteners", "relaypolicies", "virtualmtapools"]
  verbs: ["list", "watch"]
- apiGroups: ["vmta.dev"]
  resources: ["smtplisteners/status", "relaypolicies/status", "virtualmtapools/status"]
  verbs: ["patch"]
- apiGroups: ["vmta.dev"]
  resources: ["virtualmtapools"]
  verbs: ["patch"]
- apiGroups: [""]
  resources: ["services"]
  verbs: ["list", "watch", "create", "patch", "delete"]
- apiGroups: ["apps"]
  resources: ["statefulsets", "deployments"]
  verbs: ["list", "watch", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["list", "watch", "create", "patch"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["list", "watch", "create", "patch"]
- apiGroups: [""]
  resources: ["secrets", "pods"]
  verbs: ["list", "watch"]
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}
