{{/* Names and labels, as `helm create` makes them. */}}
{{- define "aula.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "aula.fullname" -}}
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

{{- define "aula.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "aula.selectorLabels" -}}
app.kubernetes.io/name: {{ include "aula.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "aula.labels" -}}
helm.sh/chart: {{ include "aula.chart" . }}
{{ include "aula.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "aula.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* The Secret with api-key, api-secret and redis-url. */}}
{{- define "aula.secretName" -}}
{{- default (include "aula.fullname" .) .Values.existingSecret }}
{{- end }}

{{/* The Secret with the cluster CA's certificate and the nodes' pairs. */}}
{{- define "aula.tlsSecretName" -}}
{{- default (printf "%s-cluster-tls" (include "aula.fullname" .)) .Values.cluster.tls.existingSecret }}
{{- end }}

{{/* The node id prefix: pod N is node "<prefix>-N". */}}
{{- define "aula.nodeIdPrefix" -}}
{{- default .Values.cluster.region .Values.cluster.nodeIdPrefix }}
{{- end }}

{{/*
The directory's Redis URL: externalRedis.url, or the master Service of the bundled bitnami/redis
(named as that chart's common.names.fullname does).
*/}}
{{- define "aula.redisUrl" -}}
{{- if .Values.externalRedis.url }}
{{- .Values.externalRedis.url }}
{{- else if .Values.redis.enabled }}
{{- $name := default "redis" .Values.redis.nameOverride }}
{{- $full := printf "%s-%s" .Release.Name $name }}
{{- if .Values.redis.fullnameOverride }}
{{- $full = .Values.redis.fullnameOverride }}
{{- else if contains $name .Release.Name }}
{{- $full = .Release.Name }}
{{- end }}
{{- $host := printf "%s-master" ($full | trunc 63 | trimSuffix "-") | trunc 63 | trimSuffix "-" }}
{{- $auth := "" }}
{{- if .Values.redis.auth.enabled }}
{{- $password := required "redis.auth.password: set it when redis.auth.enabled (the nodes' Redis URL needs it)" .Values.redis.auth.password }}
{{- /* urlquery escapes a space as "+", which is a plain "+" in a URL's userinfo */}}
{{- $auth = printf ":%s@" ($password | urlquery | replace "+" "%20") }}
{{- end }}
{{- printf "redis://%s%s.%s.svc:6379" $auth $host .Release.Namespace }}
{{- end }}
{{- end }}
