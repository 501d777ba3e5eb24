{{- define "agent-tracer.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "agent-tracer.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "agent-tracer.selectorLabels" -}}
app.kubernetes.io/name: {{ include "agent-tracer.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "agent-tracer.labels" -}}
{{ include "agent-tracer.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "agent-tracer.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "agent-tracer.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The tracer's config file: the chart's named values, then `config` (which wins). */}}
{{- define "agent-tracer.config" -}}
{{- $cfg := dict -}}
{{- $labelRules := or (get (.Values.selection.include | default dict) "pod_label") (get (.Values.selection.exclude | default dict) "pod_label") -}}
{{- if and $labelRules (not .Values.kubeApi.enabled) -}}
{{- fail "selection pod_label rules need kubeApi.enabled: pod labels come from the Kubernetes API" -}}
{{- end -}}
{{- if .Values.otlp.endpoint }}{{ $_ := set $cfg "otlp_endpoint" .Values.otlp.endpoint }}{{ end -}}
{{- if .Values.otlp.protocol }}{{ $_ := set $cfg "otlp_protocol" .Values.otlp.protocol }}{{ end -}}
{{- if .Values.captureContent }}{{ $_ := set $cfg "capture_content" true }}{{ end -}}
{{- $_ := set $cfg "health_listen" (printf "0.0.0.0:%v" .Values.health.port) -}}
{{- if .Values.metrics.enabled }}{{ $_ := set $cfg "prometheus_listen" (printf "0.0.0.0:%v" .Values.metrics.port) }}{{ end -}}
{{- if and .Values.metrics.serviceMonitor.enabled (not .Values.metrics.enabled) -}}
{{- fail "metrics.serviceMonitor.enabled needs metrics.enabled: the endpoint is on loopback otherwise" -}}
{{- end -}}
{{- if .Values.kubeApi.enabled }}{{ $_ := set $cfg "kube_api" true }}{{ end -}}
{{- range $kind := list "exe" "cmdline" "container" "namespace" "pod_label" -}}
{{- with (get ($.Values.selection.include | default dict) $kind) }}{{ $_ := set $cfg (printf "include_%s" $kind) . }}{{ end -}}
{{- with (get ($.Values.selection.exclude | default dict) $kind) }}{{ $_ := set $cfg (printf "exclude_%s" $kind) . }}{{ end -}}
{{- end -}}
{{- $cfg = mergeOverwrite $cfg (deepCopy .Values.config) -}}
{{- toToml $cfg -}}
{{- end -}}
