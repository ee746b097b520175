{{/* Chart name, truncated to the DNS label limit. */}}
{{- define "terrasnap.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Release full name (the operator's Deployment/StatefulSet and ServiceAccount). */}}
{{- define "terrasnap.fullname" -}}
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

{{- define "terrasnap.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object the chart renders. */}}
{{- define "terrasnap.labels" -}}
helm.sh/chart: {{ include "terrasnap.chart" . }}
{{ include "terrasnap.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: terrasnap
{{- end }}

{{/* Selects the operator's pods. */}}
{{- define "terrasnap.selectorLabels" -}}
app.kubernetes.io/name: {{ include "terrasnap.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "terrasnap.operatorSelectorLabels" -}}
{{ include "terrasnap.selectorLabels" . }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "terrasnap.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "terrasnap.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "terrasnap.gcServiceAccountName" -}}
{{- if .Values.gc.serviceAccount.create }}
{{- default (printf "%s-gc" (include "terrasnap.fullname" .) | trunc 63 | trimSuffix "-") .Values.gc.serviceAccount.name }}
{{- else }}
{{- required "gc.serviceAccount.name is required when gc.serviceAccount.create is false" .Values.gc.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "terrasnap.peeringName" -}}
{{- default (include "terrasnap.fullname" .) .Values.peering.name }}
{{- end }}

{{/* repository:tag or repository@digest. Usage: include "terrasnap.image" (list .Values.image .Chart.AppVersion) */}}
{{- define "terrasnap.image" -}}
{{- $img := index . 0 }}{{ $appVersion := index . 1 }}
{{- if $img.digest }}
{{- printf "%s@%s" $img.repository $img.digest }}
{{- else }}
{{- printf "%s:%s" $img.repository (default $appVersion $img.tag | toString) }}
{{- end }}
{{- end }}
