{{/* Names, labels and the values derived from the config that several templates share. */}}

{{/* The chart name, or nameOverride. */}}
{{- define "parley.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name (object names): fullnameOverride, or release-chart (once if it already has it). */}}
{{- define "parley.fullname" -}}
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

{{- define "parley.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "parley.selectorLabels" -}}
app.kubernetes.io/name: {{ include "parley.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "parley.labels" -}}
helm.sh/chart: {{ include "parley.chart" . }}
{{ include "parley.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: worker
{{- end }}

{{- define "parley.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "parley.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Secret the worker's environment comes from: the existing one, the chart's, or "" for none. */}}
{{- define "parley.secretName" -}}
{{- if .Values.secrets.existingSecret }}
{{- .Values.secrets.existingSecret }}
{{- else if .Values.secrets.values }}
{{- include "parley.fullname" . }}
{{- end }}
{{- end }}

{{/* The admin port from config.admin.listen ("host:port"); the probes and the Service need it on. */}}
{{- define "parley.adminPort" -}}
{{- $listen := toString (dig "admin" "listen" "0.0.0.0:9090" .Values.config) }}
{{- $port := regexFind "[0-9]+$" $listen }}
{{- if or (not (regexMatch "^(\\[[0-9A-Fa-f:.]*\\]|[^:\\[\\]]*):[0-9]{1,5}$" $listen)) (gt (int $port) 65535) (eq (int $port) 0) }}
{{- fail (printf "config.admin.listen must be \"host:port\" with a fixed port (the probes and the Service need the admin endpoint), got %q" $listen) }}
{{- end }}
{{- if regexMatch "^(127\\.|localhost:|\\[::1\\]:)" $listen }}
{{- fail (printf "config.admin.listen %q is loopback only: the kubelet's probes cannot reach it; use 0.0.0.0:PORT" $listen) }}
{{- end }}
{{- $port }}
{{- end }}

{{/* config.worker.drain_timeout_ms in ms (parley's default 30000 when unset). */}}
{{- define "parley.drainMs" -}}
{{- $d := dig "worker" "drain_timeout_ms" 30000 .Values.config }}
{{- if not (regexMatch "^[0-9]+$" (toString $d)) }}
{{- fail (printf "config.worker.drain_timeout_ms must be a plain number of ms for the chart to size terminationGracePeriodSeconds, got %v" $d) }}
{{- end }}
{{- int64 $d }}
{{- end }}

{{/* terminationGracePeriodSeconds: longer than the drain timeout, or the chart refuses. */}}
{{- define "parley.terminationGrace" -}}
{{- $drainS := div (add (int64 (include "parley.drainMs" .)) 999) 1000 }}
{{- if kindIs "invalid" .Values.terminationGracePeriodSeconds }}
{{- add $drainS .Values.terminationGraceExtraSeconds }}
{{- else if le (int64 .Values.terminationGracePeriodSeconds) $drainS }}
{{- fail (printf "terminationGracePeriodSeconds (%v) must be longer than config.worker.drain_timeout_ms (%v s), or the pod is killed mid-drain" .Values.terminationGracePeriodSeconds $drainS) }}
{{- else }}
{{- .Values.terminationGracePeriodSeconds }}
{{- end }}
{{- end }}

{{/* The rendered parley.yaml (the ConfigMap's data and the checksum/config annotation). */}}
{{- define "parley.configYaml" -}}
# parley.yaml rendered by the {{ include "parley.chart" . }} chart from .Values.config; ${VAR} expands from
# the container's environment (the Secret).
{{ toYaml .Values.config }}
{{- end }}

{{/* Combinations of values the chart refuses (called by the Deployment, so every render checks them). */}}
{{- define "parley.validate" -}}
{{- if and .Values.hpa.enabled .Values.keda.enabled }}
{{- fail "hpa.enabled and keda.enabled are exclusive: KEDA creates its own HPA for the Deployment; enable one of them" }}
{{- end }}
{{- if and .Values.hpa.enabled (gt (int .Values.hpa.minReplicas) (int .Values.hpa.maxReplicas)) }}
{{- fail "hpa.minReplicas must not be above hpa.maxReplicas" }}
{{- end }}
{{- if and .Values.hpa.enabled (not (or .Values.hpa.targetCPUUtilizationPercentage .Values.hpa.targetMemoryUtilizationPercentage)) }}
{{- fail "hpa needs targetCPUUtilizationPercentage or targetMemoryUtilizationPercentage" }}
{{- end }}
{{- if and .Values.keda.enabled (gt (int .Values.keda.minReplicaCount) (int .Values.keda.maxReplicaCount)) }}
{{- fail "keda.minReplicaCount must not be above keda.maxReplicaCount" }}
{{- end }}
{{- if and .Values.pdb.enabled (not (kindIs "invalid" .Values.pdb.minAvailable)) (not (kindIs "invalid" .Values.pdb.maxUnavailable)) }}
{{- fail "pdb: set minAvailable or maxUnavailable, not both (null the other)" }}
{{- end }}
{{- if and .Values.secrets.existingSecret .Values.secrets.values }}
{{- fail "secrets.existingSecret and secrets.values are exclusive: the chart creates a Secret only without an existing one" }}
{{- end }}
{{- end }}
