{{/* Common labels. */}}
{{- define "kuryr.labels" -}}
app.kubernetes.io/name: kuryr-rs
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: kuryr-rs
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "kuryr.image" -}}
{{- $root := index . 0 -}}
{{ $root.Values.image.registry }}/{{ index . 1 }}:{{ $root.Values.image.tag | default $root.Chart.AppVersion }}
{{- end }}

{{/* One `option = value` line; empty strings and empty lists are left out, lists are joined with commas. */}}
{{- define "kuryr.opt" -}}
{{- $v := index . 1 -}}
{{- if kindIs "slice" $v }}{{ $v = join "," $v }}{{ end -}}
{{- if kindIs "float64" $v }}{{ $v = int64 $v }}{{ end -}}
{{- if ne (toString $v) "" }}
{{ index . 0 }} = {{ $v }}
{{- end }}
{{- end }}

{{- define "kuryr.apiRoot" -}}
{{- if .Values.apiServer.host -}}
{{- if contains ":" .Values.apiServer.host -}}
https://[{{ .Values.apiServer.host }}]:{{ .Values.apiServer.port }}
{{- else -}}
https://{{ .Values.apiServer.host }}:{{ .Values.apiServer.port }}
{{- end -}}
{{- end -}}
{{- end }}

{{/* kuryr.conf without [neutron]: all the daemon gets, and the controller's file minus credentials. */}}
{{- define "kuryr.conf.common" -}}
{{- $v := .Values -}}
[DEFAULT]
{{- include "kuryr.opt" (list "debug" "false") }}

[kubernetes]
{{- include "kuryr.opt" (list "api_root" (include "kuryr.apiRoot" .)) }}
{{- include "kuryr.opt" (list "ssl_verify_server_crt" $v.kubernetes.sslVerifyServerCrt) }}
{{- include "kuryr.opt" (list "pod_vif_driver" $v.kubernetes.podVifDriver) }}
{{- include "kuryr.opt" (list "vif_pool_driver" $v.kubernetes.vifPoolDriver) }}
{{- include "kuryr.opt" (list "pod_subnets_driver" $v.kubernetes.podSubnetsDriver) }}
{{- include "kuryr.opt" (list "pod_security_groups_driver" $v.kubernetes.podSecurityGroupsDriver) }}
{{- include "kuryr.opt" (list "enabled_handlers" $v.kubernetes.enabledHandlers) }}
{{- include "kuryr.opt" (list "endpoints_driver_octavia_provider" $v.kubernetes.octaviaProvider) }}
{{- include "kuryr.opt" (list "controller_ha" $v.controller.leaderElect) }}
{{- include "kuryr.opt" (list "use_events" $v.kubernetes.useEvents) }}

[neutron_defaults]
{{- include "kuryr.opt" (list "project" $v.neutronDefaults.project) }}
{{- include "kuryr.opt" (list "pod_subnet" $v.neutronDefaults.podSubnet) }}
{{- include "kuryr.opt" (list "pod_security_groups" $v.neutronDefaults.podSecurityGroups) }}
{{- include "kuryr.opt" (list "service_subnet" $v.neutronDefaults.serviceSubnet) }}
{{- include "kuryr.opt" (list "ovs_bridge" $v.neutronDefaults.ovsBridge) }}
{{- include "kuryr.opt" (list "network_device_mtu" $v.neutronDefaults.networkDeviceMtu) }}
{{- include "kuryr.opt" (list "resource_tags" $v.neutronDefaults.resourceTags) }}
{{- include "kuryr.opt" (list "external_svc_net" $v.neutronDefaults.externalSvcNet) }}
{{- include "kuryr.opt" (list "external_svc_subnet" $v.neutronDefaults.externalSvcSubnet) }}

[vif_pool]
{{- include "kuryr.opt" (list "ports_pool_min" $v.vifPool.portsPoolMin) }}
{{- include "kuryr.opt" (list "ports_pool_max" $v.vifPool.portsPoolMax) }}
{{- include "kuryr.opt" (list "ports_pool_batch" $v.vifPool.portsPoolBatch) }}
{{- include "kuryr.opt" (list "ports_pool_update_frequency" $v.vifPool.portsPoolUpdateFrequency) }}

[namespace_subnet]
{{- include "kuryr.opt" (list "pod_router" $v.namespaceSubnet.podRouter) }}
{{- include "kuryr.opt" (list "pod_subnet_pool" $v.namespaceSubnet.podSubnetPool) }}

[pod_vif_nested]
{{- include "kuryr.opt" (list "worker_nodes_subnets" $v.podVifNested.workerNodesSubnets) }}

[octavia_defaults]
{{- include "kuryr.opt" (list "member_mode" $v.octaviaDefaults.memberMode) }}
{{- include "kuryr.opt" (list "enforce_sg_rules" $v.octaviaDefaults.enforceSgRules) }}
{{- include "kuryr.opt" (list "lb_algorithm" $v.octaviaDefaults.lbAlgorithm) }}
{{- include "kuryr.opt" (list "timeout_client_data" $v.octaviaDefaults.timeoutClientData) }}
{{- include "kuryr.opt" (list "timeout_member_data" $v.octaviaDefaults.timeoutMemberData) }}

[cni_daemon]
{{- include "kuryr.opt" (list "vif_annotation_timeout" $v.cniDaemon.vifAnnotationTimeout) }}
{{- include "kuryr.opt" (list "socket_path" $v.cniDaemon.socketPath) }}
{{- include "kuryr.opt" (list "cni_failures_count" $v.cniDaemon.cniFailuresCount) }}
{{- include "kuryr.opt" (list "standalone_namespace" $v.cniDaemon.standaloneNamespace) }}

[binding]
{{- include "kuryr.opt" (list "link_iface" $v.binding.linkIface) }}

[health_server]
{{- include "kuryr.opt" (list "port" $v.ports.controllerHealth) }}

[cni_health_server]
{{- include "kuryr.opt" (list "port" $v.ports.daemonHealth) }}

[prometheus_exporter]
{{- include "kuryr.opt" (list "controller_exporter_port" $v.ports.controllerMetrics) }}
{{- include "kuryr.opt" (list "cni_exporter_port" $v.ports.daemonMetrics) }}
{{- range $section, $opts := $v.extraConfig }}

[{{ $section }}]
{{- range $k, $val := $opts }}
{{- include "kuryr.opt" (list $k $val) }}
{{- end }}
{{- end }}
{{- end }}

{{- define "kuryr.conf.neutron" -}}
{{- $n := .Values.neutron -}}
[neutron]
{{- if $n.cloud }}
{{- include "kuryr.opt" (list "cloud" $n.cloud) }}
{{- include "kuryr.opt" (list "clouds_file" "/etc/kuryr/clouds.yaml") }}
{{- else }}
{{- include "kuryr.opt" (list "auth_url" $n.authUrl) }}
{{- include "kuryr.opt" (list "auth_type" $n.authType) }}
{{- end }}
{{- if $n.cloud }}
{{- else if hasPrefix "v3applicationcredential" $n.authType | or (eq $n.authType "applicationcredential") }}
{{- include "kuryr.opt" (list "application_credential_id" $n.applicationCredentialId) }}
{{- include "kuryr.opt" (list "application_credential_name" $n.applicationCredentialName) }}
{{- include "kuryr.opt" (list "application_credential_secret" $n.applicationCredentialSecret) }}
{{- include "kuryr.opt" (list "username" $n.username) }}
{{- include "kuryr.opt" (list "user_domain_name" $n.userDomainName) }}
{{- else }}
{{- include "kuryr.opt" (list "username" $n.username) }}
{{- include "kuryr.opt" (list "password" $n.password) }}
{{- include "kuryr.opt" (list "user_domain_name" $n.userDomainName) }}
{{- include "kuryr.opt" (list "project_name" $n.projectName) }}
{{- include "kuryr.opt" (list "project_id" $n.projectId) }}
{{- include "kuryr.opt" (list "project_domain_name" $n.projectDomainName) }}
{{- end }}
{{- include "kuryr.opt" (list "region_name" $n.regionName) }}
{{- include "kuryr.opt" (list "endpoint_type" $n.endpointType) }}
{{- include "kuryr.opt" (list "insecure" $n.insecure) }}
{{- if $n.caBundle }}
{{- include "kuryr.opt" (list "cafile" "/etc/kuryr/ca/ca.crt") }}
{{- end }}
{{- end }}

{{- define "kuryr.conf.controller" -}}
{{ include "kuryr.conf.common" . }}

{{ include "kuryr.conf.neutron" . }}
{{- end }}

{{- define "kuryr.controllerSecret" -}}
{{- .Values.neutron.existingSecret | default "kuryr-controller-config" -}}
{{- end }}

{{/* env of both pods: the API server override (see values apiServer). Call only when set. */}}
{{- define "kuryr.apiEnv" -}}
- name: KUBERNETES_SERVICE_HOST
  value: {{ .Values.apiServer.host | quote }}
- name: KUBERNETES_SERVICE_PORT
  value: {{ .Values.apiServer.port | toString | quote }}
- name: KUBERNETES_SERVICE_PORT_HTTPS
  value: {{ .Values.apiServer.port | toString | quote }}
{{- end }}
