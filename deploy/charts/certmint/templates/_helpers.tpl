{{/* The prefix of every object's name: the release name when it already
says certmint, else "<release>-certmint". */}}
{{- define "certmint.fullname" -}}
{{- if contains "certmint" .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-certmint" .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "certmint.driverName" -}}{{ include "certmint.fullname" . }}-driver{{- end -}}
{{- define "certmint.controllerName" -}}{{ include "certmint.fullname" . }}-controller{{- end -}}

{{- define "certmint.labels" -}}
app.kubernetes.io/part-of: certmint
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "certmint.driverSelector" -}}
app.kubernetes.io/name: certmint-driver
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "certmint.controllerSelector" -}}
app.kubernetes.io/name: certmint-controller
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "certmint.image" -}}
{{ .image.repository }}:{{ .image.tag | default .root.Chart.AppVersion }}
{{- end -}}

{{- define "certmint.clusterResourceNamespace" -}}
{{ .Values.controller.clusterResourceNamespace | default .Release.Namespace }}
{{- end -}}
