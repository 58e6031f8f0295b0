{{/*
RBAC rules of the operator: the least it needs. Plain YAML, no templating: the
manifests in deploy/base carry the same rules, and a test compares them.
*/}}
{{- define "flotilla-operator.rules" -}}
# Watch Clusters (get: a DatabaseGroup's Cluster).
- apiGroups: ["flotilla.dev"]
  resources: ["clusters"]
  verbs: ["get", "list", "watch"]
# Watch DatabaseGroups; patch them to add and remove the finalizer.
- apiGroups: ["flotilla.dev"]
  resources: ["databasegroups"]
  verbs: ["list", "watch", "patch"]
# Write status through the status subresource (server-side apply).
- apiGroups: ["flotilla.dev"]
  resources: ["clusters/status", "databasegroups/status"]
  verbs: ["patch"]
# Owner references on children of a Cluster.
- apiGroups: ["flotilla.dev"]
  resources: ["clusters/finalizers"]
  verbs: ["update"]
# Children of a Cluster, written by server-side apply. The StatefulSet is deleted (its
# pods orphaned) and created again when the volumes grow.
- apiGroups: ["apps"]
  resources: ["statefulsets"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["services", "configmaps"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# Certificates of Clusters with spec.tls: the cluster CA, the node and the operator's
# client certificates it issues (server-side apply), read back to call the nodes.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "create", "patch"]
# The NetworkPolicy of a Cluster's nodes (spec.networkPolicy); deleted when disabled.
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["get", "create", "patch", "delete"]
# cert-manager Certificates of Clusters with spec.tls.issuerRef.
- apiGroups: ["cert-manager.io"]
  resources: ["certificates"]
  verbs: ["get", "create", "patch", "delete"]
# Restart pods one at a time; clear a pod's leadership hand-over request once done.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "watch", "patch", "delete"]
# Keep the cluster id on every volume (patch); delete the volumes of removed nodes.
- apiGroups: [""]
  resources: ["persistentvolumeclaims"]
  verbs: ["list", "watch", "patch", "delete"]
# Watch Backups and write their status; owner references on their Jobs; create them on
# schedule and delete the expired ones.
- apiGroups: ["flotilla.dev"]
  resources: ["backups"]
  verbs: ["list", "watch", "create", "delete"]
# Watch ScheduledBackups and write their status.
- apiGroups: ["flotilla.dev"]
  resources: ["scheduledbackups"]
  verbs: ["list", "watch"]
- apiGroups: ["flotilla.dev"]
  resources: ["scheduledbackups/status"]
  verbs: ["patch"]
- apiGroups: ["flotilla.dev"]
  resources: ["backups/status"]
  verbs: ["patch"]
- apiGroups: ["flotilla.dev"]
  resources: ["backups/finalizers"]
  verbs: ["update"]
# The Job taking a Backup, created once by server-side apply and then read; the Job
# deleting an expired backup's data.
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "list", "watch", "create", "patch"]
# Events on Clusters, DatabaseGroups, Backups and ScheduledBackups.
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}

{{/*
Read-only access to Kubernetes Nodes, cluster-scoped whatever rbac.scope is: the operator
gets the Node each pod runs on and copies the labels a Cluster's spec.placementLabels names
onto the Flotilla node. It only gets Nodes by name; it neither lists nor watches them.
*/}}
{{- define "flotilla-operator.nodeRules" -}}
- apiGroups: [""]
  resources: ["nodes"]
  verbs: ["get"]
{{- end }}

{{/* Rules for leader election, in the operator's own namespace only. */}}
{{- define "flotilla-operator.leaderElectionRules" -}}
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  verbs: ["get", "create", "update"]
{{- end }}
