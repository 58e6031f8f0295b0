{{/* Name of the chart. */}}
{{- define "flotilla-operator.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: the release name, prefixed with the chart name unless it contains it. */}}
{{- define "flotilla-operator.fullname" -}}
{{- if contains .Chart.Name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/* Labels that select the operator pod. */}}
{{- define "flotilla-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "flotilla-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels of every object. */}}
{{- define "flotilla-operator.labels" -}}
{{ include "flotilla-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end }}

{{/* Name of the ServiceAccount. */}}
{{- define "flotilla-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "flotilla-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The pod security context; under OpenShift's restricted SCC without a fixed user or group. */}}
{{- define "flotilla-operator.podSecurityContext" -}}
{{- if .Values.openshift }}
{{- toYaml (omit .Values.podSecurityContext "runAsUser" "runAsGroup" "fsGroup") }}
{{- else }}
{{- toYaml .Values.podSecurityContext }}
{{- end }}
{{- end }}

{{/* Whether to grant the ClusterRole that reads Kubernetes Nodes. */}}
{{- define "flotilla-operator.readNodes" -}}
{{- if kindIs "bool" .Values.rbac.readNodes }}
{{- if .Values.rbac.readNodes }}true{{ end }}
{{- else }}true
{{- end }}
{{- end }}
