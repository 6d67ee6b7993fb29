{{/*
The scaler's manifests. Rendered by the umbrella chart with its root context (see the umbrella's
README, "How the chart is built"); reads the umbrella's values.
*/}}

{{/*
Cluster-wide RBAC rules: the scaler lists and watches every HTTPScaledObject and InterceptorRoute
(their scaling targets); when a route's metric changes it reads the ScaledObjects KEDA asked about
and annotates their HPAs, so KEDA rebuilds them from the new metric specs. Plain YAML: `cargo xtask
chart check` parses it.
*/}}
{{- define "scaler.rules" -}}
- apiGroups: ["http.keda.sh"]
  resources: ["httpscaledobjects", "interceptorroutes"]
  verbs: ["list", "watch"]
- apiGroups: ["keda.sh"]
  resources: ["scaledobjects"]
  verbs: ["get"]
- apiGroups: ["autoscaling"]
  resources: ["horizontalpodautoscalers"]
  verbs: ["get", "patch"]
{{- end }}

{{/* RBAC rules in the release namespace: the interceptors' admin EndpointSlices. */}}
{{- define "scaler.namespaceRules" -}}
- apiGroups: ["discovery.k8s.io"]
  resources: ["endpointslices"]
  verbs: ["list", "watch"]
{{- end }}

{{- define "scaler.manifests" -}}
{{- $ctx := dict "root" . "component" "scaler" -}}
{{- $name := include "keda-http-add-on.name" (merge (dict "kind" "deployment") $ctx) -}}
{{- $roleName := include "keda-http-add-on.name" (merge (dict "kind" "clusterRole") $ctx) -}}
{{- $metricsPort := .Values.scaler.metricsPort | default .Values.scaler.metrics.prometheus.port -}}
{{- /* With the Prometheus endpoint off there is nothing to scrape: no metrics port, Service or ServiceMonitor. */}}
{{- $metrics := .Values.scaler.metrics.prometheus.enabled -}}
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ $name }}
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "keda-http-add-on.labels" $ctx | nindent 4 }}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: {{ $roleName }}
  labels:
    {{- include "keda-http-add-on.labels" $ctx | nindent 4 }}
rules:
  {{- include "scaler.rules" . | nindent 2 }}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: {{ $roleName }}
  labels:
    {{- include "keda-http-add-on.labels" $ctx | nindent 4 }}
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: {{ $roleName }}
subjects:
  - kind: ServiceAccount
    name: {{ $name }}
    namespace: {{ .Release.Namespace }}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: {{ $name }}
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "keda-http-add-on.labels" $ctx | nindent 4 }}
rules:
  {{- include "scaler.namespaceRules" . | nindent 2 }}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: {{ $name }}
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "keda-http-add-on.labels" $ctx | nindent 4 }}
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: Role
  name: {{ $name }}
subjects:
  - kind: ServiceAccount
    name: {{ $name }}
    namespace: {{ .Release.Namespace }}
---
apiVersion: v1
kind: Service
metadata:
  name: {{ include "keda-http-add-on.scalerService" . }}
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "keda-http-add-on.labels" $ctx | nindent 4 }}
spec:
  type: ClusterIP
  selector:
    {{- include "keda-http-add-on.selectorLabels" $ctx | nindent 4 }}
  ports:
    - name: grpc
      port: {{ .Values.scaler.grpcPort }}
      targetPort: grpc
      protocol: TCP
      appProtocol: grpc
    {{- if $metrics }}
    - name: metrics
      port: {{ $metricsPort }}
      targetPort: metrics
      protocol: TCP
    {{- end }}
{{- if $metrics }}
---
apiVersion: v1
kind: Service
metadata:
  name: {{ $name }}-metrics
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "keda-http-add-on.labels" $ctx | nindent 4 }}
    http.keda.sh/service: metrics
spec:
  type: ClusterIP
  selector:
    {{- include "keda-http-add-on.selectorLabels" $ctx | nindent 4 }}
  ports:
    - name: metrics
      port: {{ $metricsPort }}
      targetPort: metrics
      protocol: TCP
{{- end }}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ $name }}
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "keda-http-add-on.labels" $ctx | nindent 4 }}
spec:
  replicas: {{ .Values.scaler.replicas }}
  selector:
    matchLabels:
      {{- include "keda-http-add-on.selectorLabels" $ctx | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "keda-http-add-on.labels" $ctx | nindent 8 }}
      {{- with .Values.scaler.podAnnotations }}
      annotations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
    spec:
      serviceAccountName: {{ $name }}
      {{- with .Values.scaler.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      securityContext:
        {{- include "keda-http-add-on.podSecurityContext" $ctx | nindent 8 }}
      terminationGracePeriodSeconds: 10
      containers:
        - name: {{ include "keda-http-add-on.name" (merge (dict "kind" "container") $ctx) }}
          image: {{ include "keda-http-add-on.image" $ctx | quote }}
          imagePullPolicy: {{ .Values.scaler.pullPolicy }}
          env:
            - name: KEDA_HTTP_SCALER_PORT
              value: {{ .Values.scaler.grpcPort | quote }}
            - name: OTEL_PROM_EXPORTER_ENABLED
              value: {{ .Values.scaler.metrics.prometheus.enabled | quote }}
            - name: OTEL_PROM_EXPORTER_PORT
              value: {{ $metricsPort | quote }}
            - name: OTEL_EXPORTER_OTLP_TRACES_ENABLED
              value: {{ .Values.scaler.tracing.enabled | quote }}
            - name: OTEL_EXPORTER_OTLP_TRACES_PROTOCOL
              value: {{ .Values.scaler.tracing.protocol | quote }}
            - name: OTEL_EXPORTER_OTLP_METRICS_ENABLED
              value: {{ .Values.scaler.metrics.otlp.enabled | quote }}
            - name: KEDA_HTTP_SCALER_TARGET_ADMIN_NAMESPACE
              value: {{ .Release.Namespace | quote }}
            - name: KEDA_HTTP_SCALER_TARGET_ADMIN_SERVICE
              value: {{ include "keda-http-add-on.interceptorAdminService" . | quote }}
            - name: KEDA_HTTP_SCALER_TARGET_ADMIN_DEPLOYMENT
              value: {{ include "keda-http-add-on.name" (dict "root" . "component" "interceptor" "kind" "deployment") | quote }}
            - name: KEDA_HTTP_SCALER_TARGET_ADMIN_PORT
              value: {{ .Values.interceptor.admin.port | quote }}
            - name: KEDA_HTTP_QUEUE_TICK_DURATION
              value: {{ .Values.scaler.queueTickDuration | quote }}
            - name: KEDA_HTTP_SCALER_STREAM_INTERVAL_MS
              value: {{ .Values.scaler.streamInterval | quote }}
            {{- if .Values.profiling.scaler.enabled }}
            # The debug endpoint (/debug/stats), where upstream serves Go's pprof.
            - name: PROFILING_BIND_ADDRESS
              value: {{ printf ":%v" .Values.profiling.scaler.port | quote }}
            {{- end }}
            {{- include "keda-http-add-on.commonEnv" $ctx | nindent 12 }}
          ports:
            - name: grpc
              containerPort: {{ .Values.scaler.grpcPort }}
              protocol: TCP
            {{- if $metrics }}
            - name: metrics
              containerPort: {{ $metricsPort }}
              protocol: TCP
            {{- end }}
            {{- if .Values.profiling.scaler.enabled }}
            - name: profiling
              containerPort: {{ .Values.profiling.scaler.port }}
              protocol: TCP
            {{- end }}
          # gRPC health services of the scaler: `liveness` while the process serves,
          # `readiness` while interceptor counts are fresh.
          livenessProbe:
            grpc:
              port: {{ .Values.scaler.grpcPort }}
              service: liveness
            periodSeconds: 5
            timeoutSeconds: 5
            failureThreshold: 6
          readinessProbe:
            grpc:
              port: {{ .Values.scaler.grpcPort }}
              service: readiness
            periodSeconds: 5
            timeoutSeconds: 1
            failureThreshold: 3
          resources:
            {{- toYaml .Values.scaler.resources | nindent 12 }}
          securityContext:
            {{- include "keda-http-add-on.securityContext" $ctx | nindent 12 }}
      {{- include "keda-http-add-on.scheduling" $ctx | nindent 6 }}
{{- if $metrics }}
{{ include "keda-http-add-on.serviceMonitor" $ctx }}
{{- end }}
{{- end }}
