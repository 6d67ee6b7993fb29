{{/*
Helpers shared by the umbrella chart and its component subcharts. Every component template is
rendered with the root context, so `.Values` is this chart's values everywhere; helpers that need
to know the component take `(dict "root" $ "component" "<operator|interceptor|scaler>")`.
*/}}

{{/* Prefix of every resource name; fixed (as upstream) so Services have well-known names. */}}
{{- define "keda-http-add-on.prefix" -}}
keda-add-ons-http
{{- end }}

{{/*
Names of a component's objects, as upstream's chart names them: `.kind` is one of
deployment, container, serviceAccount (namespaced, fixed prefix) or clusterRole (cluster-scoped,
named after the release).
*/}}
{{- define "keda-http-add-on.name" -}}
{{- $prefix := include "keda-http-add-on.prefix" .root -}}
{{- $component := .component -}}
{{- if eq .kind "clusterRole" -}}
{{- if eq $component "operator" -}}{{ .root.Release.Name }}-role
{{- else if eq $component "scaler" -}}{{ .root.Release.Name }}-external-scaler
{{- else -}}{{ .root.Release.Name }}-{{ $component }}
{{- end -}}
{{- else if eq $component "operator" -}}
{{- if eq .kind "deployment" -}}{{ $prefix }}-controller-manager
{{- else if eq .kind "container" -}}{{ $prefix }}-operator
{{- else -}}{{ $prefix }}
{{- end -}}
{{- else if eq $component "scaler" -}}{{ $prefix }}-external-scaler
{{- else -}}{{ $prefix }}-{{ $component }}
{{- end -}}
{{- end }}

{{/* The scaler's Service: KEDA and the operator's ScaledObjects dial it. */}}
{{- define "keda-http-add-on.scalerService" -}}
{{ include "keda-http-add-on.prefix" . }}-{{ .Values.scaler.service }}
{{- end }}

{{/* The interceptors' admin Service: the scaler finds the interceptors through it. */}}
{{- define "keda-http-add-on.interceptorAdminService" -}}
{{ include "keda-http-add-on.prefix" . }}-{{ .Values.interceptor.admin.service }}
{{- end }}

{{/* The interceptors' proxy Service: where users send HTTP traffic. */}}
{{- define "keda-http-add-on.interceptorProxyService" -}}
{{ include "keda-http-add-on.prefix" . }}-{{ .Values.interceptor.proxy.service }}
{{- end }}

{{/*
Labels selecting a component's pods: upstream's, so that `helm upgrade` from an upstream release
keeps the (immutable) Deployment selectors.
*/}}
{{- define "keda-http-add-on.selectorLabels" -}}
app.kubernetes.io/component: {{ .component }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/name: http-add-on
app.kubernetes.io/part-of: keda-add-ons-http
{{- end }}

{{/* Labels of every resource of a component. */}}
{{- define "keda-http-add-on.labels" -}}
{{ include "keda-http-add-on.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Values.images.tag | default .root.Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- with .root.Values.additionalLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* A component's image reference. */}}
{{- define "keda-http-add-on.image" -}}
{{ index .root.Values.images .component }}:{{ .root.Values.images.tag | default .root.Chart.AppVersion }}
{{- end }}

{{/*
Container security context of a component: `securityContext.<component>` when set, else
`securityContext` without the per-component keys (upstream's layout).
*/}}
{{- define "keda-http-add-on.securityContext" -}}
{{- $all := .root.Values.securityContext | default dict -}}
{{- $own := index $all .component -}}
{{- toYaml (default (omit $all "operator" "scaler" "interceptor") $own) -}}
{{- end }}

{{/* Pod security context of a component, with the same override rule. */}}
{{- define "keda-http-add-on.podSecurityContext" -}}
{{- $all := .root.Values.podSecurityContext | default dict -}}
{{- $own := index $all .component -}}
{{- toYaml (default (omit $all "operator" "scaler" "interceptor") $own) -}}
{{- end }}

{{/* Environment every component gets: `<component>.extraEnvs`, logging (`logging.<component>`) and the pod's identity. */}}
{{- define "keda-http-add-on.commonEnv" -}}
{{- $logging := index .root.Values.logging .component -}}
- name: RUST_LOG
  value: {{ $logging.level | quote }}
- name: LOG_FORMAT
  value: {{ $logging.format | quote }}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
{{- /* Last, so that they win over the chart's own variables. */}}
{{- range $name, $value := (index .root.Values .component).extraEnvs }}
- name: {{ $name }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- end }}

{{/* Scheduling fields of a component's pods (`<component>.nodeSelector/tolerations/affinity`). */}}
{{- define "keda-http-add-on.scheduling" -}}
{{- $values := index .root.Values .component -}}
nodeSelector:
  kubernetes.io/os: linux
  {{- with $values.nodeSelector }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- with $values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $values.topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* A ServiceMonitor for a component's metrics Service (when `serviceMonitor.enabled`). */}}
{{- define "keda-http-add-on.serviceMonitor" -}}
{{- if .root.Values.serviceMonitor.enabled }}
---
apiVersion: monitoring.coreos.com/v1
kind: ServiceMonitor
metadata:
  name: {{ include "keda-http-add-on.prefix" .root }}-{{ .component }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "keda-http-add-on.labels" . | nindent 4 }}
    {{- with .root.Values.serviceMonitor.additionalLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  selector:
    matchLabels:
      {{- include "keda-http-add-on.selectorLabels" . | nindent 6 }}
      http.keda.sh/service: metrics
  namespaceSelector:
    matchNames:
      - {{ .root.Release.Namespace }}
  endpoints:
    - port: metrics
      path: /metrics
      interval: {{ .root.Values.serviceMonitor.interval }}
      {{- if eq .component "operator" }}
      {{- if .root.Values.operator.metrics.secure }}
      # The operator's certificate is self-signed unless `operator.metrics.certDir` holds one.
      scheme: https
      tlsConfig:
        insecureSkipVerify: true
      {{- end }}
      {{- if .root.Values.operator.metrics.auth }}
      # Prometheus' own service account token; bind it to the `<release>-metrics-reader` ClusterRole.
      bearerTokenFile: /var/run/secrets/kubernetes.io/serviceaccount/token
      {{- end }}
      {{- end }}
{{- end }}
{{- end }}
