"""Offline checks of what the operator ships.

The Helm chart is linted by the real Helm library (helm-sdkpy); the manifests that
`flotilla-operator render`, `kubectl kustomize deploy/` and `crds/` hold are validated
against the Kubernetes schemas (kubernetes-validate, strict mode).

Run from the repository root after `cargo build -p flotilla-operator`:
    python -m pytest -p no:cacheprovider operator/tests/packaging
"""

import asyncio
import os
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
KUBERNETES_VERSION = "1.33.0"
BINARY = Path(
    os.environ.get("FLOTILLA_OPERATOR_BIN", ROOT / "target" / "debug" / "flotilla-operator")
)

# A Cluster with tuning and a LoadBalancer Service; its status records the cluster id.
BOOTSTRAPPED_CLUSTER = """\
apiVersion: flotilla.dev/v1alpha1
kind: Cluster
metadata:
  name: demo
  namespace: shop
spec:
  replicas: 5
  image: flotilla/flotilla-node:0.1.0
  metaVoters: 5
  heartbeatInterval: 100ms
  electionTimeout: 1s
  service:
    type: LoadBalancer
status:
  clusterId: c-1
"""


# A Cluster with TLS from the operator's own CA and a NetworkPolicy admitting one namespace.
SECURE_CLUSTER = """\
apiVersion: flotilla.dev/v1alpha1
kind: Cluster
metadata:
  name: vault
  namespace: shop
spec:
  replicas: 3
  image: flotilla/flotilla-node:0.1.0
  tls:
    enabled: true
    certificateLifetime: 720h
  networkPolicy:
    enabled: true
    clients:
      - namespaceSelector:
          matchLabels:
            kubernetes.io/metadata.name: storefront
status:
  clusterId: c-1
"""


def documents(text):
    return [d for d in yaml.safe_load_all(text) if d]


def validate_all(docs):
    assert docs, "nothing to validate"
    for doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def render(path, *flags):
    if not BINARY.exists():
        pytest.fail(f"{BINARY} is missing: run `cargo build -p flotilla-operator` first")
    result = subprocess.run(
        [str(BINARY), "render", "-f", str(path), *flags],
        capture_output=True,
        text=True,
        check=True,
    )
    return documents(result.stdout)


def lint(chart):
    from helm_sdkpy import Configuration
    from helm_sdkpy.chart import Lint

    result = asyncio.run(Lint(Configuration(namespace="flotilla-system")).run(str(chart)))
    assert result["TotalChartsLinted"] == 1
    # Severity: 1 info, 2 warning, 3 error.
    return [m for m in result.get("Messages") or [] if m["Severity"] >= 2], result


def chart_copy(tmp_path, edit_values):
    chart = tmp_path / "flotilla-operator"
    shutil.copytree(ROOT / "charts" / "flotilla-operator", chart)
    values = chart / "values.yaml"
    values.write_text(edit_values(values.read_text()))
    return chart


def test_the_chart_lints_clean_with_helm():
    problems, result = lint(ROOT / "charts" / "flotilla-operator")
    assert not problems, problems
    assert not result.get("Errors"), result


def test_the_chart_lints_clean_in_cluster_mode(tmp_path):
    chart = chart_copy(tmp_path, lambda v: v.replace("scope: namespace", "scope: cluster"))
    problems, result = lint(chart)
    assert not problems, problems
    assert not result.get("Errors"), result


def test_lint_catches_a_broken_template(tmp_path):
    """Helm's lint is not a rubber stamp: a template reading a missing value fails."""
    chart = chart_copy(tmp_path, lambda v: v)
    service = chart / "templates" / "service.yaml"
    service.write_text(service.read_text() + "\n{{ .Values.missing.field }}\n")
    problems, _ = lint(chart)
    assert problems


def test_rendered_example_cluster_is_valid():
    docs = render(ROOT / "deploy" / "examples" / "cluster.yaml")
    kinds = [d["kind"] for d in docs]
    assert kinds == ["ConfigMap", "Service", "Service", "StatefulSet", "PodDisruptionBudget"]
    assert docs[0]["data"]["initial-cluster-state"] == "existing"
    assert docs[3]["spec"]["replicas"] == 3
    validate_all(docs)


def test_rendered_first_apply_is_valid():
    docs = render(ROOT / "deploy" / "examples" / "cluster.yaml", "--first-apply")
    assert [d["kind"] for d in docs] == ["ConfigMap", "Service", "Service", "StatefulSet"]
    assert docs[0]["data"]["initial-cluster-state"] == "new"
    assert docs[3]["spec"]["replicas"] == 1
    validate_all(docs)


def test_render_shows_the_next_step_for_a_live_status(tmp_path):
    status = tmp_path / "status.yaml"
    status.write_text(
        "clusterId: c-1\n"
        "scaleDown: {from: 5, to: 3, pods: [flotilla-4, flotilla-3], phase: Draining}\n"
    )
    docs = render(ROOT / "deploy" / "examples" / "cluster.yaml", "--status", str(status))
    assert docs[3]["spec"]["replicas"] == 5
    assert docs[3]["metadata"]["annotations"]["flotilla.dev/cluster-id"] == "c-1"
    validate_all(docs)


def test_rendered_bootstrapped_cluster_is_valid(tmp_path):
    cluster = tmp_path / "cluster.yaml"
    cluster.write_text(BOOTSTRAPPED_CLUSTER)
    docs = render(cluster)
    kinds = [d["kind"] for d in docs]
    assert kinds == ["ConfigMap", "Service", "Service", "StatefulSet", "PodDisruptionBudget"]
    statefulset = docs[3]
    assert statefulset["spec"]["replicas"] == 5
    validate_all(docs)


def test_rendered_secure_cluster_is_valid(tmp_path):
    path = tmp_path / "secure.yaml"
    path.write_text(SECURE_CLUSTER)
    docs = render(path)
    validate_all(docs)
    kinds = [d["kind"] for d in docs]
    assert "NetworkPolicy" in kinds, kinds
    statefulset = next(d for d in docs if d["kind"] == "StatefulSet")
    container = statefulset["spec"]["template"]["spec"]["containers"][0]
    assert "--peer-tls-ca" in container["args"]
    assert container["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"


def test_kustomize_output_is_valid():
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed")
    result = subprocess.run(
        [kubectl, "kustomize", str(ROOT / "deploy")], capture_output=True, text=True, check=True
    )
    validate_all(documents(result.stdout))


def test_crds_are_valid():
    for path in [ROOT / "crds" / "flotilla.dev.yaml"]:
        docs = documents(path.read_text())
        assert [d["kind"] for d in docs] == ["CustomResourceDefinition"] * 4
        validate_all(docs)


def test_an_invalid_statefulset_is_rejected():
    """The validator is not a rubber stamp."""
    docs = render(ROOT / "deploy" / "examples" / "cluster.yaml")
    statefulset = docs[3]
    statefulset["spec"]["replicas"] = "three"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(statefulset, KUBERNETES_VERSION, strict=True)


def lint_with(tmp_path, settings):
    """Lints a copy of the chart whose values have `settings` (YAML) in place of theirs."""
    chart = chart_copy(tmp_path, lambda v: v)
    values = yaml.safe_load((chart / "values.yaml").read_text())
    values.update(yaml.safe_load(settings))
    (chart / "values.yaml").write_text(yaml.safe_dump(values))
    problems, result = lint(chart)
    return problems + list(result.get("Errors") or [])


def test_the_chart_has_a_values_schema_that_refuses_unknown_keys():
    schema = yaml.safe_load((ROOT / "charts" / "flotilla-operator" / "values.schema.json").read_text())
    assert schema["additionalProperties"] is False
    values = yaml.safe_load((ROOT / "charts" / "flotilla-operator" / "values.yaml").read_text())
    assert set(values) <= set(schema["properties"]), set(values) - set(schema["properties"])


@pytest.mark.parametrize(
    "typo",
    [
        "resouces:\n  limits:\n    memory: 1Gi\n",
        "imagePullSecret: [{name: regcred}]\n",
        "image:\n  repository: flotilla/flotilla-operator\n  tga: latest\n",
        "rbac:\n  scope: everywhere\n",
        "monitoring:\n  podMonitr:\n    enabled: true\n",
    ],
)
def test_a_misspelt_or_unknown_value_is_refused(tmp_path, typo):
    assert lint_with(tmp_path, typo), f"lint accepted {typo!r}"


def test_a_value_of_the_wrong_type_is_refused(tmp_path):
    assert lint_with(tmp_path, 'replicaCount: "two"\n'), "lint accepted replicaCount: two"


@pytest.mark.parametrize(
    "settings",
    [
        "openshift: true\n",
        "priorityClassName: system-cluster-critical\n",
        "imagePullSecrets:\n  - name: regcred\n",
        "serviceAccount:\n  create: false\n  name: shared\n  annotations: {}\n",
        "serviceAccount:\n  create: true\n  name: ops\n"
        "  annotations:\n    eks.amazonaws.com/role-arn: arn:aws:iam::1:role/flotilla\n",
        "rbac:\n  create: true\n  scope: namespace\n  readNodes: true\n",
        "rbac:\n  create: false\n  scope: cluster\n  readNodes: null\n",
        "test:\n  image: registry.example/busybox:1.37\n",
        "monitoring:\n"
        "  podMonitor: {enabled: true, interval: 15s, labels: {release: prometheus}}\n"
        "  serviceMonitor: {enabled: true, interval: 30s, labels: {}}\n"
        "  prometheusRule: {enabled: true, labels: {}}\n"
        '  grafanaDashboard: {enabled: true, labels: {grafana_dashboard: "1"}}\n',
        "rbac: {create: true, scope: namespace, readNodes: null}\n"
        "monitoring:\n"
        "  podMonitor: {enabled: true, interval: 15s, labels: {}}\n"
        "  serviceMonitor: {enabled: false, interval: 30s, labels: {}}\n"
        "  prometheusRule: {enabled: false, labels: {}}\n"
        '  grafanaDashboard: {enabled: false, labels: {grafana_dashboard: "1"}}\n',
    ],
)
def test_the_chart_lints_clean_with_each_setting(tmp_path, settings):
    assert not lint_with(tmp_path, settings)


def test_the_helm_test_pod_gets_the_operators_health_endpoint():
    test = (ROOT / "charts" / "flotilla-operator" / "templates" / "tests" / "health.yaml").read_text()
    assert "helm.sh/hook: test" in test
    assert "/healthz" in test
    assert "-metrics." in test, "through the operator's metrics Service"


def test_openshift_mode_drops_the_fixed_user_and_group():
    helpers = (ROOT / "charts" / "flotilla-operator" / "templates" / "_helpers.tpl").read_text()
    assert 'omit .Values.podSecurityContext "runAsUser" "runAsGroup" "fsGroup"' in helpers
    for template in ["deployment.yaml", "tests/health.yaml"]:
        text = (ROOT / "charts" / "flotilla-operator" / "templates" / template).read_text()
        assert 'include "flotilla-operator.podSecurityContext"' in text, template
