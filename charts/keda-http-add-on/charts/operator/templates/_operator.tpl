{{/*
The operator's manifests. Rendered by the umbrella chart with its root context (see the umbrella's
README, "How the chart is built"); reads the umbrella's values.
*/}}

{{/*
RBAC rules in the watched namespace (or cluster-wide). Plain YAML on purpose: `cargo xtask chart
check` parses them and compares them with what the operator's code reads and writes.
*/}}
{{- define "operator.rules" -}}
- apiGroups: ["http.keda.sh"]
  resources: ["httpscaledobjects"]
  verbs: ["list", "watch", "patch"]
- apiGroups: ["http.keda.sh"]
  resources: ["httpscaledobjects/status"]
  verbs: ["patch"]
- apiGroups: ["http.keda.sh"]
  resources: ["httpscaledobjects/finalizers"]
  verbs: ["update"]
- apiGroups: ["http.keda.sh"]
  resources: ["interceptorroutes"]
  verbs: ["list", "watch"]
- apiGroups: ["http.keda.sh"]
  resources: ["interceptorroutes/status"]
  verbs: ["patch"]
- apiGroups: ["keda.sh"]
  resources: ["scaledobjects"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}

{{/* RBAC rules in the release namespace: the leader-election Lease. */}}
{{- define "operator.leaderElectionRules" -}}
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  verbs: ["get", "create", "update"]
{{- end }}

{{/*
RBAC rules of upstream's `<release>-metrics-reader` ClusterRole: what a Prometheus needs to scrape
the operator's metrics when they are protected (upstream's `operator.metrics.auth`).
*/}}
{{- define "operator.metricsReaderRules" -}}
- nonResourceURLs: ["/metrics"]
  verbs: ["get"]
{{- end }}

{{- define "operator.manifests" -}}
{{- $ctx := dict "root" . "component" "operator" -}}
{{- $prefix := include "keda-http-add-on.prefix" . -}}
{{- $name := include "keda-http-add-on.name" (merge (dict "kind" "deployment") $ctx) -}}
{{- $account := include "keda-http-add-on.name" (merge (dict "kind" "serviceAccount") $ctx) -}}
{{- $roleName := include "keda-http-add-on.name" (merge (dict "kind" "clusterRole") $ctx) -}}
{{- $kind := ternary "Role" "ClusterRole" (ne .Values.operator.watchNamespace "") -}}
{{- $metricsPort := .Values.operator.metricsPort | default .Values.operator.port -}}
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ $account }}
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
  {{- include "operator.rules" . | nindent 2 }}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: {{ $kind }}Binding
metadata:
  name: {{ .Release.Name }}-rolebinding
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
    name: {{ $account }}
    namespace: {{ .Release.Namespace }}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: {{ $prefix }}-role
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "keda-http-add-on.labels" $ctx | nindent 4 }}
rules:
  {{- include "operator.leaderElectionRules" . | nindent 2 }}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: {{ $prefix }}-role-rolebinding
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "keda-http-add-on.labels" $ctx | nindent 4 }}
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: Role
  name: {{ $prefix }}-role
subjects:
  - kind: ServiceAccount
    name: {{ $account }}
    namespace: {{ .Release.Namespace }}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: {{ .Release.Name }}-metrics-reader
  labels:
    {{- include "keda-http-add-on.labels" $ctx | nindent 4 }}
rules:
  {{- include "operator.metricsReaderRules" . | nindent 2 }}
{{- if .Values.operator.metrics.auth }}
---
# Upstream's binding of the operator to `system:auth-delegator`: with `operator.metrics.auth`
# the operator checks every scrape's bearer token with a TokenReview and a SubjectAccessReview.
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: {{ .Release.Name }}-auth-delegator
  labels:
    {{- include "keda-http-add-on.labels" $ctx | nindent 4 }}
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: system:auth-delegator
subjects:
  - kind: ServiceAccount
    name: {{ $account }}
    namespace: {{ .Release.Namespace }}
{{- end }}
---
apiVersion: v1
kind: Service
metadata:
  name: {{ $name }}-metrics-service
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
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ $name }}
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "keda-http-add-on.labels" $ctx | nindent 4 }}
spec:
  replicas: {{ .Values.operator.replicas }}
  selector:
    matchLabels:
      {{- include "keda-http-add-on.selectorLabels" $ctx | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "keda-http-add-on.labels" $ctx | nindent 8 }}
      {{- with .Values.operator.podAnnotations }}
      annotations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
    spec:
      serviceAccountName: {{ $account }}
      {{- with .Values.operator.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      securityContext:
        {{- include "keda-http-add-on.podSecurityContext" $ctx | nindent 8 }}
      # The operator stops its controllers and releases the Lease at once on SIGTERM.
      terminationGracePeriodSeconds: 10
      containers:
        - name: {{ include "keda-http-add-on.name" (merge (dict "kind" "container") $ctx) }}
          image: {{ include "keda-http-add-on.image" $ctx | quote }}
          imagePullPolicy: {{ .Values.operator.pullPolicy }}
          env:
            - name: KEDA_HTTP_OPERATOR_EXTERNAL_SCALER_SERVICE
              value: {{ include "keda-http-add-on.scalerService" . | quote }}
            - name: KEDA_HTTP_OPERATOR_EXTERNAL_SCALER_PORT
              value: {{ .Values.scaler.grpcPort | quote }}
            - name: KEDA_HTTP_OPERATOR_NAMESPACE
              value: {{ .Release.Namespace | quote }}
            - name: KEDA_HTTP_OPERATOR_WATCH_NAMESPACE
              value: {{ .Values.operator.watchNamespace | quote }}
            - name: KEDA_HTTP_OPERATOR_HEALTH_ADDRESS
              value: {{ printf "0.0.0.0:%v" .Values.operator.healthPort | quote }}
            - name: KEDA_HTTP_OPERATOR_METRICS_ADDRESS
              value: {{ printf "0.0.0.0:%v" $metricsPort | quote }}
            - name: KEDA_HTTP_OPERATOR_METRICS_SECURE
              value: {{ .Values.operator.metrics.secure | quote }}
            - name: KEDA_HTTP_OPERATOR_METRICS_AUTH
              value: {{ .Values.operator.metrics.auth | quote }}
            {{- with .Values.operator.metrics.certDir }}
            - name: KEDA_HTTP_OPERATOR_METRICS_CERT_DIR
              value: {{ . | quote }}
            {{- end }}
            - name: KEDA_HTTP_OPERATOR_LEADER_ELECTION
              value: {{ .Values.operator.leaderElection | quote }}
            {{- include "keda-http-add-on.commonEnv" $ctx | nindent 12 }}
          ports:
            - name: health
              containerPort: {{ .Values.operator.healthPort }}
              protocol: TCP
            - name: metrics
              containerPort: {{ $metricsPort }}
              protocol: TCP
          livenessProbe:
            httpGet:
              path: /healthz
              port: health
            initialDelaySeconds: 5
            periodSeconds: 10
            failureThreshold: 3
          readinessProbe:
            httpGet:
              path: /readyz
              port: health
            periodSeconds: 5
            failureThreshold: 3
          resources:
            {{- toYaml .Values.operator.resources | nindent 12 }}
          securityContext:
            {{- include "keda-http-add-on.securityContext" $ctx | nindent 12 }}
      {{- include "keda-http-add-on.scheduling" $ctx | nindent 6 }}
{{ include "keda-http-add-on.serviceMonitor" $ctx }}
{{- end }}
