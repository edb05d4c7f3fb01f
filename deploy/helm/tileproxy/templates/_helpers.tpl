{{- define "tileproxy.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "tileproxy.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "tileproxy.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tileproxy.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "tileproxy.labels" -}}
{{ include "tileproxy.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "tileproxy.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "tileproxy.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "tileproxy.secretName" -}}
{{- default (include "tileproxy.fullname" .) .Values.hmacSecret.existingSecret -}}
{{- end -}}

{{/* The configuration file: the user's config with the settings the chart
owns (listeners, drain timing) laid over it. */}}
{{- define "tileproxy.config" -}}
{{- $owned := dict "listen" ":8080" "metrics_listen" (printf ":%d" (int .Values.service.metricsPort)) "drain_delay" (printf "%ds" (int .Values.drainDelaySeconds)) "shutdown_timeout" (printf "%ds" (int .Values.shutdownTimeoutSeconds)) -}}
{{- if .Values.tls.secretName -}}
{{- $_ := set $owned "tls" (dict "cert_file" "/etc/tileproxy/tls/tls.crt" "key_file" "/etc/tileproxy/tls/tls.key" "min_version" (toString .Values.tls.minVersion)) -}}
{{- end -}}
{{- toYaml (merge $owned (deepCopy .Values.config)) -}}
{{- end -}}
