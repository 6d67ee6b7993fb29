{{/*
The interceptor's manifests. Rendered by the umbrella chart with its root context (see the
umbrella's README, "How the chart is built"); reads the umbrella's values.
*/}}

{{/*
RBAC rules in the watched namespace (or cluster-wide): the interceptor only lists and watches
(reflectors) the route objects, the Services and EndpointSlices of their backends, and the
ConfigMaps labelled `http.keda.sh/response-body`. Plain YAML: `cargo xtask chart check` parses it.
*/}}
{{- define "interceptor.rules" -}}
- apiGroups: ["http.keda.sh"]
  resources: ["httpscaledobjects", "interceptorroutes"]
  verbs: ["list", "watch"]
- apiGroups: [""]
  resources: ["services", "configmaps"]
  verbs: ["list", "watch"]
- apiGroups: ["discovery.k8s.io"]
  resources: ["endpointslices"]
  verbs: ["list", "watch"]
{{- end }}

{{/*
The directories the interceptor searches for extra certificate/key pairs, comma-separated:
where each Secret of `interceptor.tls.cert_store_secrets` (the argument) is mounted.
*/}}
{{- define "interceptor.certStoreDirs" -}}
{{- $dirs := list -}}
{{- range . -}}
{{- $dirs = append $dirs (printf "/certstore/%s" .) -}}
{{- end -}}
{{- join "," $dirs -}}
{{- end }}

{{- define "interceptor.manifests" -}}
{{- $ctx := dict "root" . "component" "interceptor" -}}
{{- $name := include "keda-http-add-on.name" (merge (dict "kind" "deployment") $ctx) -}}
{{- $roleName := include "keda-http-add-on.name" (merge (dict "kind" "clusterRole") $ctx) -}}
{{- $kind := ternary "Role" "ClusterRole" (ne .Values.operator.watchNamespace "") -}}
{{- $tls := .Values.interceptor.tls -}}
{{- $certPath := $tls.cert_path | default $tls.certPath -}}
{{- $keyPath := $tls.key_path | default $tls.keyPath -}}
{{- $certSecret := $tls.cert_secret | default $tls.certSecret -}}
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ $name }}
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "keda-http-add-on.labels" $ctx | nindent 4 }}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: {{ $kind }}
metadata:
  name: {{ $roleName }}
  {{- if .Values.operator.watchNamespace }}
  namespace: {{ .Values.operator.watchNamespace }}
  {{- end }}
  labels:
    {{- include "keda-http-add-on.labels" $ctx | nindent 4 }}
rules:
  {{- include "interceptor.rules" . | nindent 2 }}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: {{ $kind }}Binding
metadata:
  name: {{ $roleName }}
  {{- if .Values.operator.watchNamespace }}
  namespace: {{ .Values.operator.watchNamespace }}
  {{- end }}
  labels:
    {{- include "keda-http-add-on.labels" $ctx | nindent 4 }}
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: {{ $kind }}
  name: {{ $roleName }}
subjects:
  - kind: ServiceAccount
    name: {{ $name }}
    namespace: {{ .Release.Namespace }}
---
apiVersion: v1
kind: Service
metadata:
  name: {{ include "keda-http-add-on.interceptorProxyService" . }}
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "keda-http-add-on.labels" $ctx | nindent 4 }}
spec:
  type: ClusterIP
  selector:
    {{- include "keda-http-add-on.selectorLabels" $ctx | nindent 4 }}
  ports:
    - name: proxy
      port: {{ .Values.interceptor.proxy.port }}
      targetPort: proxy
      protocol: TCP
      {{- with .Values.interceptor.proxy.appProtocol }}
      appProtocol: {{ . }}
      {{- end }}
    {{- if $tls.enabled }}
    - name: proxy-tls
      port: {{ $tls.port }}
      targetPort: proxy-tls
      protocol: TCP
      {{- with $tls.appProtocol }}
      appProtocol: {{ . }}
      {{- end }}
    {{- end }}
    {{- if .Values.interceptor.check.enabled }}
    # Admission checks of an ingress that stays on the data path (auth_request, ext_authz, forwardAuth).
    - name: check
      port: {{ .Values.interceptor.check.port }}
      targetPort: check
      protocol: TCP
    {{- end }}
---
apiVersion: v1
kind: Service
metadata:
  name: {{ include "keda-http-add-on.interceptorAdminService" . }}
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "keda-http-add-on.labels" $ctx | nindent 4 }}
spec:
  type: ClusterIP
  selector:
    {{- include "keda-http-add-on.selectorLabels" $ctx | nindent 4 }}
  ports:
    # The scaler reads this port's name and number from the Service's EndpointSlices.
    - name: admin
      port: {{ .Values.interceptor.admin.port }}
      targetPort: admin
      protocol: TCP
      {{- with .Values.interceptor.admin.appProtocol }}
      appProtocol: {{ . }}
      {{- end }}
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
      port: {{ .Values.interceptor.metrics.port }}
      targetPort: metrics
      protocol: TCP
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ $name }}
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "keda-http-add-on.labels" $ctx | nindent 4 }}
spec:
  # No `replicas`: the interceptor's ScaledObject owns the count, and an upgrade must not reset it.
  selector:
    matchLabels:
      {{- include "keda-http-add-on.selectorLabels" $ctx | nindent 6 }}
  strategy:
    type: RollingUpdate
    rollingUpdate:
      maxSurge: 1
      maxUnavailable: 0
  template:
    metadata:
      labels:
        {{- include "keda-http-add-on.labels" $ctx | nindent 8 }}
      {{- with .Values.interceptor.podAnnotations }}
      annotations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
    spec:
      serviceAccountName: {{ $name }}
      {{- with .Values.interceptor.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      securityContext:
        {{- include "keda-http-add-on.podSecurityContext" $ctx | nindent 8 }}
      # SIGTERM: /readyz turns 503, `shutdownDelay` later the listeners close, then in-flight
      # requests drain for up to `drainTimeout`. The grace period must cover both.
      terminationGracePeriodSeconds: {{ .Values.interceptor.terminationGracePeriodSeconds }}
      containers:
        - name: {{ include "keda-http-add-on.name" (merge (dict "kind" "container") $ctx) }}
          image: {{ include "keda-http-add-on.image" $ctx | quote }}
          imagePullPolicy: {{ .Values.interceptor.pullPolicy }}
          env:
            - name: KEDA_HTTP_PROXY_PORT
              value: {{ .Values.interceptor.proxy.port | quote }}
            - name: KEDA_HTTP_ADMIN_PORT
              value: {{ .Values.interceptor.admin.port | quote }}
            - name: OTEL_PROM_EXPORTER_PORT
              value: {{ .Values.interceptor.metrics.port | quote }}
            - name: OTEL_EXPORTER_OTLP_TRACES_ENABLED
              value: {{ .Values.interceptor.tracing.enabled | quote }}
            - name: OTEL_EXPORTER_OTLP_TRACES_PROTOCOL
              value: {{ .Values.interceptor.tracing.protocol | quote }}
            - name: OTEL_EXPORTER_OTLP_METRICS_ENABLED
              value: {{ .Values.interceptor.metrics.otlp.enabled | quote }}
            - name: KEDA_HTTP_WATCH_NAMESPACE
              value: {{ .Values.operator.watchNamespace | quote }}
            {{- /* Empty timeouts are left unset: the interceptor's defaults are upstream's. */}}
            {{- with .Values.interceptor.readinessTimeout }}
            - name: KEDA_HTTP_READINESS_TIMEOUT
              value: {{ . | quote }}
            {{- end }}
            {{- with .Values.interceptor.replicas.waitTimeout }}
            - name: KEDA_CONDITION_WAIT_TIMEOUT
              value: {{ . | quote }}
            {{- end }}
            {{- with .Values.interceptor.tcpConnectTimeout }}
            - name: KEDA_HTTP_CONNECT_TIMEOUT
              value: {{ . | quote }}
            {{- end }}
            {{- with .Values.interceptor.responseHeaderTimeout }}
            - name: KEDA_HTTP_RESPONSE_HEADER_TIMEOUT
              value: {{ . | quote }}
            {{- end }}
            {{- with .Values.interceptor.requestTimeout }}
            - name: KEDA_HTTP_REQUEST_TIMEOUT
              value: {{ . | quote }}
            {{- end }}
            - name: KEDA_HTTP_MAX_IDLE_CONNS
              value: {{ .Values.interceptor.maxIdleConns | quote }}
            - name: KEDA_HTTP_MAX_CONNECTIONS
              value: {{ .Values.interceptor.maxConnections | quote }}
            - name: KEDA_HTTP_COLD_START_MAX_PENDING_REQUESTS
              value: {{ .Values.interceptor.coldStart.maxPendingRequests | quote }}
            - name: KEDA_HTTP_MAX_IDLE_CONNS_PER_HOST
              value: {{ .Values.interceptor.maxIdleConnsPerHost | quote }}
            - name: KEDA_HTTP_DIRECT_POD_ROUTING
              value: {{ .Values.interceptor.directPodRouting | quote }}
            - name: KEDA_HTTP_ENABLE_COLD_START_HEADER
              value: {{ .Values.interceptor.enableColdStartHeader | quote }}
            - name: KEDA_HTTP_LOG_REQUESTS
              value: {{ .Values.interceptor.logRequests | quote }}
            - name: KEDA_HTTP_SHUTDOWN_DELAY
              value: {{ .Values.interceptor.shutdownDelay | quote }}
            - name: KEDA_HTTP_DRAIN_TIMEOUT
              value: {{ .Values.interceptor.drainTimeout | quote }}
            {{- if $tls.enabled }}
            - name: KEDA_HTTP_PROXY_TLS_ENABLED
              value: "true"
            - name: KEDA_HTTP_PROXY_TLS_PORT
              value: {{ $tls.port | quote }}
            - name: KEDA_HTTP_PROXY_TLS_CERT_PATH
              value: {{ $certPath | quote }}
            - name: KEDA_HTTP_PROXY_TLS_KEY_PATH
              value: {{ $keyPath | quote }}
            - name: KEDA_HTTP_PROXY_TLS_CERT_STORE_PATHS
              value: {{ include "interceptor.certStoreDirs" $tls.cert_store_secrets | quote }}
            {{- end }}
            {{- /* TLS to backends and the TLS policy (listener and backends), set when given. */}}
            {{- if $tls.skipVerify }}
            - name: KEDA_HTTP_TLS_SKIP_VERIFY
              value: "true"
            {{- end }}
            {{- with $tls.caDirs }}
            - name: KEDA_HTTP_TLS_CA_DIRS
              value: {{ join "," . | quote }}
            {{- end }}
            {{- with $tls.minVersion }}
            - name: KEDA_HTTP_TLS_MIN_VERSION
              value: {{ . | quote }}
            {{- end }}
            {{- with $tls.maxVersion }}
            - name: KEDA_HTTP_TLS_MAX_VERSION
              value: {{ . | quote }}
            {{- end }}
            {{- with $tls.cipherSuites }}
            - name: KEDA_HTTP_TLS_CIPHER_SUITES
              value: {{ . | quote }}
            {{- end }}
            {{- with $tls.curvePreferences }}
            - name: KEDA_HTTP_TLS_CURVE_PREFERENCES
              value: {{ . | quote }}
            {{- end }}
            {{- if .Values.interceptor.check.enabled }}
            - name: KEDA_HTTP_CHECK_PORT
              value: {{ .Values.interceptor.check.port | quote }}
            {{- with .Values.interceptor.check.pathPrefix }}
            - name: KEDA_HTTP_CHECK_PATH_PREFIX
              value: {{ . | quote }}
            {{- end }}
            {{- end }}
            {{- if .Values.profiling.interceptor.enabled }}
            # The debug endpoint (/debug/stats), where upstream serves Go's pprof.
            - name: PROFILING_BIND_ADDRESS
              value: {{ printf ":%v" .Values.profiling.interceptor.port | quote }}
            {{- end }}
            {{- include "keda-http-add-on.commonEnv" $ctx | nindent 12 }}
          ports:
            - name: proxy
              containerPort: {{ .Values.interceptor.proxy.port }}
              protocol: TCP
            - name: admin
              containerPort: {{ .Values.interceptor.admin.port }}
              protocol: TCP
            - name: metrics
              containerPort: {{ .Values.interceptor.metrics.port }}
              protocol: TCP
            {{- if $tls.enabled }}
            - name: proxy-tls
              containerPort: {{ $tls.port }}
              protocol: TCP
            {{- end }}
            {{- if .Values.interceptor.check.enabled }}
            - name: check
              containerPort: {{ .Values.interceptor.check.port }}
              protocol: TCP
            {{- end }}
            {{- if .Values.profiling.interceptor.enabled }}
            - name: profiling
              containerPort: {{ .Values.profiling.interceptor.port }}
              protocol: TCP
            {{- end }}
          livenessProbe:
            httpGet:
              path: /livez
              port: admin
            initialDelaySeconds: 5
            periodSeconds: 10
            failureThreshold: 3
          # 200 once the routing table has synced; 503 while shutting down.
          readinessProbe:
            httpGet:
              path: /readyz
              port: admin
            periodSeconds: 1
            failureThreshold: 2
          resources:
            {{- toYaml .Values.interceptor.resources | nindent 12 }}
          securityContext:
            {{- include "keda-http-add-on.securityContext" $ctx | nindent 12 }}
          {{- if or $tls.enabled .Values.interceptor.extraVolumeMounts }}
          volumeMounts:
            {{- if $tls.enabled }}
            # The TLS Secret, at the directory of `certPath` (and of `keyPath` if it differs).
            - name: certs
              mountPath: {{ dir $certPath }}
              readOnly: true
            {{- if ne (dir $keyPath) (dir $certPath) }}
            - name: certs
              mountPath: {{ dir $keyPath }}
              readOnly: true
            {{- end }}
            {{- range $i, $secret := $tls.cert_store_secrets }}
            - name: certstore-{{ $i }}
              mountPath: /certstore/{{ $secret }}
              readOnly: true
            {{- end }}
            {{- end }}
            {{- with .Values.interceptor.extraVolumeMounts }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          {{- end }}
      {{- include "keda-http-add-on.scheduling" $ctx | nindent 6 }}
      {{- if or $tls.enabled .Values.interceptor.extraVolumes }}
      volumes:
        {{- if $tls.enabled }}
        - name: certs
          secret:
            secretName: {{ $certSecret | quote }}
        {{- range $i, $secret := $tls.cert_store_secrets }}
        - name: certstore-{{ $i }}
          secret:
            secretName: {{ $secret | quote }}
        {{- end }}
        {{- end }}
        {{- with .Values.interceptor.extraVolumes }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- end }}
---
# KEDA scales the interceptors on the total of pending requests over every route, as reported by
# the scaler for `interceptorTargetPendingRequests`.
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata:
  name: {{ $name }}
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "keda-http-add-on.labels" $ctx | nindent 4 }}
spec:
  minReplicaCount: {{ .Values.interceptor.replicas.min }}
  maxReplicaCount: {{ .Values.interceptor.replicas.max }}
  pollingInterval: {{ .Values.interceptor.scaledObject.pollingInterval }}
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ $name }}
  triggers:
    - type: external
      metadata:
        scalerAddress: {{ printf "%s.%s:%v" (include "keda-http-add-on.scalerService" .) .Release.Namespace .Values.scaler.grpcPort | quote }}
        interceptorTargetPendingRequests: {{ .Values.scaler.pendingRequestsInterceptor | quote }}
{{- if .Values.interceptor.pdb.enabled }}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ $name }}
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "keda-http-add-on.labels" $ctx | nindent 4 }}
spec:
  {{- if .Values.interceptor.pdb.minAvailable }}
  minAvailable: {{ .Values.interceptor.pdb.minAvailable }}
  {{- else }}
  maxUnavailable: {{ .Values.interceptor.pdb.maxUnavailable }}
  {{- end }}
  selector:
    matchLabels:
      {{- include "keda-http-add-on.selectorLabels" $ctx | nindent 6 }}
{{- end }}
{{ include "keda-http-add-on.serviceMonitor" $ctx }}
{{- end }}
