{{/* Chart name, truncated to the 63 characters a label value allows. */}}
{{- define "pushd.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Fully qualified app name. */}}
{{- define "pushd.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "pushd.selectorLabels" -}}
app.kubernetes.io/name: {{ include "pushd.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "pushd.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "pushd.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* The Secret holding admin-api-key, jwt-hs256-secret, redis-password. */}}
{{- define "pushd.secretName" -}}
{{- default (printf "%s-secrets" (include "pushd.fullname" .)) .Values.secrets.existingSecret -}}
{{- end -}}

{{/*
terminationGracePeriodSeconds: the whole paced drain must fit before the
kubelet's SIGKILL: /readyz 503 for the delay, the paced closes over the
duration, the bounded shutdown, plus a margin.
*/}}
{{- define "pushd.gracePeriod" -}}
{{- $d := .Values.drain -}}
{{- add $d.delaySeconds $d.durationSeconds $d.shutdownTimeoutSeconds $d.marginSeconds -}}
{{- end -}}

{{/* The standalone Redis URL; $(REDIS_PASSWORD) is expanded by the kubelet. */}}
{{- define "pushd.redisURL" -}}
{{- $r := .Values.redis.standalone -}}
{{- $auth := "" -}}
{{- if $r.usePassword -}}
{{- $auth = printf "%s:$(REDIS_PASSWORD)@" $r.username -}}
{{- end -}}
{{- printf "%s://%s%s:%d/%d" (ternary "rediss" "redis" $r.tls) $auth $r.host (int $r.port) (int $r.db) -}}
{{- end -}}
