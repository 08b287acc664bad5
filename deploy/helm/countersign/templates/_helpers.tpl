{{/* The chart's name, or nameOverride. */}}
{{- define "countersign.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Release-qualified name: fullnameOverride, or <release>-<chart> unless the release already names it. */}}
{{- define "countersign.fullname" -}}
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

{{- define "countersign.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "countersign.selectorLabels" -}}
app.kubernetes.io/name: {{ include "countersign.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "countersign.labels" -}}
helm.sh/chart: {{ include "countersign.chart" . }}
{{ include "countersign.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "countersign.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "countersign.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "countersign.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* The Deployments to make: "all", or "api" and "worker". */}}
{{- define "countersign.components" -}}
{{- if eq .Values.mode "split" }}api worker{{ else }}all{{ end }}
{{- end }}

{{/* The Deployment serving the API (the Service's and the HPA's target). */}}
{{- define "countersign.apiComponent" -}}
{{- if eq .Values.mode "split" }}api{{ else }}all{{ end }}
{{- end }}

{{- define "countersign.componentName" -}}
{{- if eq .component "all" }}{{ include "countersign.fullname" .root }}{{ else }}{{ printf "%s-%s" (include "countersign.fullname" .root) .component | trunc 63 | trimSuffix "-" }}{{ end }}
{{- end }}

{{/* Settings the chart refuses, said before anything is applied. */}}
{{- define "countersign.validate" -}}
{{- if not (has .Values.mode (list "all" "split")) }}
{{- fail (printf "mode must be all or split, not %q" .Values.mode) }}
{{- end }}
{{- if .Values.persistence.enabled }}
{{- if or (eq .Values.mode "split") (gt (int .Values.replicaCount) 1) .Values.autoscaling.enabled }}
{{- fail "persistence.enabled (SQLite on a ReadWriteOnce volume) serves exactly one pod: for mode=split, replicaCount > 1 or autoscaling, put COUNTERSIGN_DATABASE_URL=postgres://… in the Secret and set persistence.enabled=false" }}
{{- end }}
{{- end }}
{{- end }}

{{/* The Secret-backed environment: every secret countersign reads, each optional. */}}
{{- define "countersign.secretEnv" -}}
{{- $default := .Values.secrets.existingSecret }}
{{- range $var := list "COUNTERSIGN_DATABASE_URL" "COUNTERSIGN_REDIS_URL" "COUNTERSIGN_SLACK_BOT_TOKEN" "COUNTERSIGN_SLACK_SIGNING_SECRET" "COUNTERSIGN_SLACK_APP_TOKEN" "COUNTERSIGN_ADMIN_TOKEN" "COUNTERSIGN_SECRET_KEY" }}
{{- $ref := get $.Values.secrets.refs $var | default dict }}
{{- $name := get $ref "name" | default $default }}
{{- if $name }}
- name: {{ $var }}
  valueFrom:
    secretKeyRef:
      name: {{ $name }}
      key: {{ get $ref "key" | default $var }}
      optional: true
{{- end }}
{{- end }}
{{- end }}

{{/* Settings from values; empty ones are left to countersign's defaults. */}}
{{- define "countersign.configEnv" -}}
- name: COUNTERSIGN_LISTEN
  value: "0.0.0.0:{{ .Values.containerPort }}"
- name: COUNTERSIGN_MANIFESTS
  value: /srv/countersign/config/manifests
- name: COUNTERSIGN_POLICIES
  value: /srv/countersign/config/policies
{{- $settings := dict
  "COUNTERSIGN_PUBLIC_URL" .Values.config.publicUrl
  "COUNTERSIGN_LOG_FORMAT" .Values.config.logFormat
  "COUNTERSIGN_REPORT_DIGEST" .Values.config.reportDigest
  "COUNTERSIGN_SLACK_ADMINS" .Values.config.slackAdmins
  "COUNTERSIGN_SLACK_API_URL" .Values.config.slackApiUrl
  "COUNTERSIGN_SLACK_TIER_SCALE" .Values.config.slackTierScale
  "COUNTERSIGN_CALLBACK_ALLOWLIST" .Values.config.callbackAllowlist
  "COUNTERSIGN_CALLBACK_TIMEOUT" .Values.config.callbackTimeout
  "COUNTERSIGN_DATABASE_MAX_CONNECTIONS" .Values.config.databaseMaxConnections
  "COUNTERSIGN_REDIS_KEY_PREFIX" .Values.config.redisKeyPrefix
  "COUNTERSIGN_MAX_CONNECTIONS" .Values.config.maxConnections
  "COUNTERSIGN_HEADER_READ_TIMEOUT" .Values.config.headerReadTimeout
}}
{{- range $var, $value := $settings }}
{{- if ne (toString $value) "" }}
- name: {{ $var }}
  value: {{ toString $value | quote }}
{{- end }}
{{- end }}
{{- end }}

{{/* The init container's script: each directory from its ConfigMap, else from the image. */}}
{{- define "countersign.copyConfig" -}}
set -eu
mkdir -p /srv/countersign/config/manifests/agents /srv/countersign/config/policies
copy_flat() { for f in "$1"/*; do if [ -f "$f" ]; then cp -L "$f" "$2/"; fi; done; }
{{- if or .Values.manifests.existingConfigMap .Values.manifests.files }}
copy_flat /sources/manifests /srv/countersign/config/manifests
{{- else }}
copy_flat /srv/countersign/manifests /srv/countersign/config/manifests
{{- end }}
{{- if or .Values.agents.existingConfigMap .Values.agents.files }}
copy_flat /sources/agents /srv/countersign/config/manifests/agents
{{- else }}
copy_flat /srv/countersign/manifests/agents /srv/countersign/config/manifests/agents
{{- end }}
{{- if or .Values.policies.existingConfigMap .Values.policies.files }}
copy_flat /sources/policies /srv/countersign/config/policies
{{- else }}
copy_flat /srv/countersign/policies /srv/countersign/config/policies
{{- end }}
exec countersign policy check
{{- end }}

{{/* The ConfigMap behind one of manifests, agents, policies ("" when the image's is used). */}}
{{- define "countersign.filesConfigMap" -}}
{{- $source := index .root.Values .which }}
{{- if $source.existingConfigMap }}{{ $source.existingConfigMap }}{{ else if $source.files }}{{ printf "%s-%s" (include "countersign.fullname" .root) .which }}{{ end }}
{{- end }}
