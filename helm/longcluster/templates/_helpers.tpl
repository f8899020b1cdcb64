{{/* Names: the release's full name, truncated to what DNS labels allow. */}}
{{- define "longcluster.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "longcluster.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "longcluster.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "longcluster.labels" -}}
helm.sh/chart: {{ include "longcluster.chart" . }}
{{ include "longcluster.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "longcluster.serviceAccountName" -}}
{{- default (printf "%s-silo" (include "longcluster.fullname" .)) .Values.serviceAccount.name -}}
{{- end -}}

{{- define "longcluster.headlessName" -}}
{{- printf "%s-silo" (include "longcluster.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Secrets: the user's when existingSecret is enabled, else the chart's. */}}
{{- define "longcluster.apiTokenSecret" -}}
{{- if .Values.apiToken.existingSecret.enabled -}}{{ .Values.apiToken.existingSecret.name }}{{- else -}}{{ include "longcluster.fullname" . }}-api-token{{- end -}}
{{- end -}}

{{- define "longcluster.apiTokenKey" -}}
{{- if .Values.apiToken.existingSecret.enabled -}}{{ .Values.apiToken.existingSecret.key }}{{- else -}}token{{- end -}}
{{- end -}}

{{- define "longcluster.tlsSecret" -}}
{{- if .Values.tls.existingSecret.enabled -}}{{ .Values.tls.existingSecret.name }}{{- else -}}{{ include "longcluster.fullname" . }}-tls{{- end -}}
{{- end -}}

{{- define "longcluster.redisSecret" -}}
{{- if .Values.redis.auth.existingSecret.enabled -}}{{ .Values.redis.auth.existingSecret.name }}{{- else -}}{{ include "longcluster.fullname" . }}-redis{{- end -}}
{{- end -}}

{{- define "longcluster.redisKey" -}}
{{- if .Values.redis.auth.existingSecret.enabled -}}{{ .Values.redis.auth.existingSecret.key }}{{- else -}}password{{- end -}}
{{- end -}}

{{- define "longcluster.redisName" -}}
{{- printf "%s-redis" (include "longcluster.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* host:port of the membership store. */}}
{{- define "longcluster.redisEndpoint" -}}
{{- if .Values.redis.bundled -}}
{{ include "longcluster.redisName" . }}:6379
{{- else -}}
{{ .Values.redis.external.host }}:{{ .Values.redis.external.port }}
{{- end -}}
{{- end -}}

{{/* Seconds as the TimeSpan text the silo binds (hh:mm:ss). */}}
{{- define "longcluster.timespan" -}}
{{- $s := int . -}}
{{- printf "%02d:%02d:%02d" (div $s 3600) (div (mod $s 3600) 60) (mod $s 60) -}}
{{- end -}}

{{- define "longcluster.gracePeriod" -}}
{{- $d := .Values.drain -}}
{{- add (int $d.preStopSleepSeconds) (int $d.shutdownTimeoutSeconds) (int $d.extraGraceSeconds) -}}
{{- end -}}

{{- define "longcluster.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
