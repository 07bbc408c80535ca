{{/* Chart name, truncated to the 63 characters a label value allows. */}}
{{- define "callboard.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: release name, plus the chart name unless the release already has it. */}}
{{- define "callboard.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else if contains (include "callboard.name" .) .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name (include "callboard.name" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/* Name of one part of the release: <fullname>-<part>, within 63 characters. */}}
{{- define "callboard.part" -}}
{{- printf "%s-%s" (include "callboard.fullname" .root | trunc (int (sub 62 (len .part))) | trimSuffix "-") .part }}
{{- end }}

{{- define "callboard.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "callboard.selectorLabels" -}}
app.kubernetes.io/name: {{ include "callboard.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "callboard.labels" -}}
helm.sh/chart: {{ include "callboard.chart" . }}
{{ include "callboard.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Labels of one component: (dict "root" $ "component" "operator"). */}}
{{- define "callboard.componentLabels" -}}
{{ include "callboard.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "callboard.componentSelector" -}}
{{ include "callboard.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "callboard.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "callboard.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "callboard.agentServiceAccountName" -}}
{{- if .Values.agentPool.serviceAccount.create }}
{{- default (include "callboard.part" (dict "root" . "part" "agent")) .Values.agentPool.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.agentPool.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "callboard.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{- define "callboard.operatorName" -}}
{{- include "callboard.part" (dict "root" . "part" "operator") }}
{{- end }}

{{- define "callboard.agentName" -}}
{{- include "callboard.part" (dict "root" . "part" (printf "agents-%s" .Values.agentPool.name)) }}
{{- end }}

{{- define "callboard.redisName" -}}
{{- include "callboard.part" (dict "root" . "part" "redis") }}
{{- end }}

{{/* The adoption namespace (empty when adoption is off). */}}
{{- define "callboard.adoptNamespace" -}}
{{- if .Values.operator.adoption.enabled }}
{{- default .Release.Namespace .Values.operator.adoption.namespace }}
{{- end }}
{{- end }}

{{/* The operator's autoscaling mode: off, scale or metrics. */}}
{{- define "callboard.autoscaleMode" -}}
{{- $mode := .Values.agentPool.autoscaling.mode }}
{{- if not .Values.agentPool.enabled }}off
{{- else if eq $mode "operator" }}scale
{{- else if or (eq $mode "hpa") (eq $mode "keda") }}metrics
{{- else }}off
{{- end }}
{{- end }}

{{/*
Environment variables that give CALLBOARD_REDIS_URL (and what it needs) to a container.
The password comes from a Secret through dependent variable expansion: $(VAR) in a
value refers to a variable defined before it in the same container.
*/}}
{{/*
The Secret holding the Redis password, or "" for none: redis.auth.existingSecret, else (bundled
mode) the one the chart generates (templates/secrets.yaml).
*/}}
{{- define "callboard.redisAuthSecret" -}}
{{- if .Values.redis.auth.existingSecret }}
{{- .Values.redis.auth.existingSecret }}
{{- else if eq .Values.redis.mode "bundled" }}
{{- printf "%s-auth" (include "callboard.redisName" .) }}
{{- end }}
{{- end }}

{{- define "callboard.redisPasswordKey" -}}
{{- ternary .Values.redis.auth.passwordKey "password" (ne .Values.redis.auth.existingSecret "") }}
{{- end }}

{{/* The Secret holding the sidecars' API token (agentPool.sidecar.apiToken). */}}
{{- define "callboard.sidecarTokenSecret" -}}
{{- .Values.agentPool.sidecar.apiToken.existingSecret | default (printf "%s-sidecar-token" (include "callboard.agentName" .)) }}
{{- end }}

{{- define "callboard.redisEnv" -}}
{{- $r := .Values.redis }}
{{- $auth := $r.auth }}
{{- $secret := include "callboard.redisAuthSecret" . }}
{{- if $secret }}
- name: CALLBOARD_REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ include "callboard.redisPasswordKey" . }}
{{- end }}
{{- if and (eq $r.mode "sentinel") $r.sentinel.existingSecret }}
- name: CALLBOARD_REDIS_SENTINEL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $r.sentinel.existingSecret }}
      key: {{ $r.sentinel.passwordKey }}
{{- end }}
{{- if and (eq $r.mode "external") $r.external.urlSecret }}
- name: CALLBOARD_REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ $r.external.urlSecret }}
      key: {{ $r.external.urlSecretKey }}
{{- else }}
{{- $scheme := "redis" }}
{{- $hostport := printf "%s.%s.svc:6379" (include "callboard.redisName" .) .Release.Namespace }}
{{- $path := "/0" }}
{{- $query := "" }}
{{- if eq $r.mode "external" }}
{{- $u := urlParse $r.external.url }}
{{- $scheme = $u.scheme }}
{{- $hostport = $u.host }}
{{- $path = $u.path }}
{{- $query = $u.query }}
{{- end }}
{{- if eq $r.mode "sentinel" }}
{{- $scheme = ternary "rediss+sentinel" "redis+sentinel" $r.sentinel.tls }}
{{- $hostport = join "," $r.sentinel.addresses }}
{{- $path = printf "/%s/%d" $r.sentinel.masterName (int $r.sentinel.db) }}
{{- if $r.sentinel.existingSecret }}
{{- $query = "sentinel_password=$(CALLBOARD_REDIS_SENTINEL_PASSWORD)" }}
{{- end }}
{{- end }}
{{- if and (ne $r.mode "bundled") $r.external.tls.caSecret }}
{{- $query = trimPrefix "&" (printf "%s&ssl_ca_certs=/etc/callboard/redis-tls/%s" $query $r.external.tls.caKey) }}
{{- end }}
{{- $userinfo := "" }}
{{- if $secret }}
{{- $userinfo = printf "%s:$(CALLBOARD_REDIS_PASSWORD)@" $auth.username }}
{{- end }}
- name: CALLBOARD_REDIS_URL
  value: {{ printf "%s://%s%s%s%s" $scheme $userinfo $hostport $path (ternary (printf "?%s" $query) "" (ne $query "")) | quote }}
{{- end }}
- name: CALLBOARD_KEY_PREFIX
  value: {{ $r.keyPrefix | quote }}
{{- end }}

{{- define "callboard.redisTlsVolume" -}}
{{- if and (ne .Values.redis.mode "bundled") .Values.redis.external.tls.caSecret }}
- name: redis-tls
  secret:
    secretName: {{ .Values.redis.external.tls.caSecret }}
{{- end }}
{{- end }}

{{- define "callboard.redisTlsMount" -}}
{{- if and (ne .Values.redis.mode "bundled") .Values.redis.external.tls.caSecret }}
- name: redis-tls
  mountPath: /etc/callboard/redis-tls
  readOnly: true
{{- end }}
{{- end }}

{{/*
The agent pods' terminationGracePeriodSeconds: the value given, else the preStop pause, the
sidecar's drain and the 15 s its shutdown and exit need.
*/}}
{{- define "callboard.agentGracePeriod" -}}
{{- $pool := .Values.agentPool }}
{{- $pool.terminationGracePeriodSeconds | default (add $pool.drain.preStopSleepSeconds $pool.drain.timeoutSeconds 15) }}
{{- end }}

{{/* Checks across values that values.schema.json cannot express, with clear messages. */}}
{{- define "callboard.validate" -}}
{{- $r := .Values.redis }}
{{- if and (eq $r.mode "sentinel") (not $r.sentinel.addresses) }}
{{- fail "redis.mode is sentinel: list the sentinels in redis.sentinel.addresses (host:26379 each)" }}
{{- end }}
{{- if and (eq $r.mode "external") (not $r.external.url) (not $r.external.urlSecret) }}
{{- fail "redis.mode is external: set redis.external.url (redis://host:6379/0) or redis.external.urlSecret" }}
{{- end }}
{{- if and (eq $r.mode "external") $r.external.url (not $r.external.urlSecret) }}
{{- $u := urlParse $r.external.url }}
{{- if not (has $u.scheme (list "redis" "rediss")) }}
{{- fail (printf "redis.external.url %q: the scheme must be redis:// or rediss://" $r.external.url) }}
{{- end }}
{{- if $u.userinfo }}
{{- fail "redis.external.url must not carry credentials: use redis.auth.existingSecret, or the whole URL in redis.external.urlSecret" }}
{{- end }}
{{- end }}
{{- if and .Values.operator.enabled (gt (float64 .Values.operator.startTimeoutSeconds) (float64 .Values.agentPool.sidecar.ttlSeconds)) }}
{{- fail (printf "operator.startTimeoutSeconds (%v) must not exceed agentPool.sidecar.ttlSeconds (%v): a start request must outlive its wait (the operator refuses to start otherwise)" .Values.operator.startTimeoutSeconds .Values.agentPool.sidecar.ttlSeconds) }}
{{- end }}
{{- $pool := .Values.agentPool }}
{{- $grace := include "callboard.agentGracePeriod" . | int }}
{{- if and $pool.enabled (gt $grace 600) (not $pool.allowLongTerminationGracePeriod) }}
{{- fail (printf "agentPool: the agent pods' terminationGracePeriodSeconds would be %d (preStopSleepSeconds + drain.timeoutSeconds + 15 when not given), above 600: the Cluster Autoscaler kills a pod it drains after --max-graceful-termination-sec (default 600), cutting the drain short. Lower drain.timeoutSeconds, or set agentPool.allowLongTerminationGracePeriod=true if your autoscaler allows more" $grace) }}
{{- end }}
{{- if and .Values.agentPool.enabled (not .Values.agentPool.agent.image.repository) }}
{{- fail "agentPool.enabled: set agentPool.agent.image.repository to your agent server's image" }}
{{- end }}
{{- $as := .Values.agentPool.autoscaling }}
{{- if and .Values.agentPool.enabled (ne $as.mode "off") }}
{{- if gt (int $as.minReplicas) (int $as.maxReplicas) }}
{{- fail (printf "agentPool.autoscaling: minReplicas (%d) is above maxReplicas (%d)" (int $as.minReplicas) (int $as.maxReplicas)) }}
{{- end }}
{{- if and (ne $as.mode "off") (not .Values.operator.enabled) }}
{{- fail (printf "agentPool.autoscaling.mode %s needs the operator (operator.enabled): it computes the replicas" $as.mode) }}
{{- end }}
{{- if and (eq $as.mode "keda") (not $as.keda.serverAddress) }}
{{- fail "agentPool.autoscaling.mode keda: set agentPool.autoscaling.keda.serverAddress (the Prometheus that scrapes the operator)" }}
{{- end }}
{{- end }}
{{- $ns := .Values.operator.watchNamespaces }}
{{- $adopt := include "callboard.adoptNamespace" . }}
{{- if and .Values.operator.enabled $ns $adopt (not (has $adopt $ns)) }}
{{- fail (printf "operator.adoption.namespace %q must be one of operator.watchNamespaces %v (the operator must see the objects it creates), or set operator.adoption.enabled=false" $adopt $ns) }}
{{- end }}
{{- end }}
