"""The Kubernetes objects (issue 12), checked without a cluster: the kustomize base renders
with `kubectl kustomize`, every object and the Helm values' embedded objects validate strictly
against the Kubernetes 1.32 schemas (kubernetes-validate), the hardening is everywhere, and
every Secret and ConfigMap key is a variable the code reads.

ServiceMonitor is a Prometheus Operator CRD that kubernetes-validate has no schema for: its
shape is checked here by hand (test_service_monitor_scrapes_the_gateway_service)."""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"
VALUES = ROOT / "deploy" / "helm" / "values.yaml"
KUBERNETES = "1.32.0"
KINDS = {
    "Deployment",
    "Service",
    "ConfigMap",
    "ServiceMonitor",
    "PodDisruptionBudget",
    "HorizontalPodAutoscaler",
    "NetworkPolicy",
    "ServiceAccount",
}
CRDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}
SECRET = "queue-pipelines-env"
CONFIG = "queue-pipelines-config"


def load_all(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def render_with_kubectl() -> list[dict]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: the render is checked file by file instead")
    out = subprocess.run(
        [kubectl, "kustomize", str(K8S)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def listed_resources() -> list[dict]:
    """The objects of every file kustomization.yaml lists, as kustomize would find them (less
    its name suffixes and common labels): what is checked where kubectl is missing."""
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    objects = [obj for name in kustomization["resources"] for obj in load_all(K8S / name)]
    for generator in kustomization.get("configMapGenerator", []):
        objects.append(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": generator["name"]},
                "data": {f: (K8S / f).read_text() for f in generator["files"]},
            }
        )
    return objects


@pytest.fixture(scope="module")
def objects() -> list[dict]:
    return render_with_kubectl() if shutil.which("kubectl") else listed_resources()


def of_kind(objects: list[dict], kind: str) -> list[dict]:
    found = [o for o in objects if o["kind"] == kind]
    assert found, f"no {kind}"
    return found


def validate_strictly(obj: dict) -> None:
    kubernetes_validate.validate(obj, KUBERNETES, strict=True)


def test_kubectl_kustomize_renders_every_kind_without_a_cluster():
    rendered = render_with_kubectl()
    assert {o["kind"] for o in rendered} >= KINDS
    # The image transformer and the generated instance ConfigMap took effect.
    (deployment,) = of_kind(rendered, "Deployment")
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == (
        "registry.example.com/queue-pipelines:CHANGE-ME"
    )
    instance_maps = [
        o for o in rendered if o["metadata"]["name"].startswith("queue-pipelines-instance-")
    ]
    assert len(instance_maps) == 1
    volumes = deployment["spec"]["template"]["spec"]["volumes"]
    assert {"name": instance_maps[0]["metadata"]["name"]} in [
        v.get("configMap") for v in volumes if "configMap" in v
    ]
    for obj in rendered:
        assert obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == "queue-pipelines"


def test_listed_files_hold_every_kind():
    assert {o["kind"] for o in listed_resources()} >= KINDS


def test_every_object_validates_strictly_against_kubernetes_1_32(objects):
    checked = set()
    for obj in objects:
        if (obj["apiVersion"], obj["kind"]) in CRDS:
            continue
        validate_strictly(obj)
        checked.add(obj["kind"])
    assert checked >= KINDS - {"ServiceMonitor"}
    for secret in load_all(K8S / "secrets.example.yaml"):
        validate_strictly(secret)


def test_strict_validation_rejects_an_unknown_field(objects):
    """The validator is not a no-op: a misspelt field in the Deployment fails."""
    (deployment,) = of_kind(objects, "Deployment")
    broken = copy.deepcopy(deployment)
    broken["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFs"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_strictly(broken)


def test_service_monitor_scrapes_the_gateway_service(objects):
    (monitor,) = of_kind(objects, "ServiceMonitor")
    (service,) = of_kind(objects, "Service")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(monitor["spec"]) <= {"selector", "endpoints", "namespaceSelector", "jobLabel"}
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    port_names = {p["name"] for p in service["spec"]["ports"]}
    for endpoint in monitor["spec"]["endpoints"]:
        assert set(endpoint) <= {
            "port",
            "path",
            "interval",
            "scrapeTimeout",
            "scheme",
            "authorization",
        }
        # /metrics is closed without GATEWAY_METRICS_TOKEN: the monitor sends it.
        credentials = endpoint["authorization"]["credentials"]
        assert endpoint["authorization"]["type"] == "Bearer"
        assert credentials == {"name": SECRET, "key": "GATEWAY_METRICS_TOKEN"}
        assert credentials["key"] in load_all(K8S / "secrets.example.yaml")[0]["stringData"]
        assert endpoint["port"] in port_names
        assert endpoint["path"] == "/metrics"
        seconds = {k: int(endpoint[k].rstrip("s")) for k in ("interval", "scrapeTimeout")}
        assert seconds["scrapeTimeout"] < seconds["interval"]


def test_gateway_deployment_replicas_probes_spread_and_hardening(objects):
    (deployment,) = of_kind(objects, "Deployment")
    spec = deployment["spec"]
    pod = spec["template"]["spec"]
    assert spec["replicas"] == 2
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert pod["serviceAccountName"] == of_kind(objects, "ServiceAccount")[0]["metadata"]["name"]
    assert pod["automountServiceAccountToken"] is False
    assert any(
        c["topologyKey"] == "kubernetes.io/hostname" for c in pod["topologySpreadConstraints"]
    )
    assert_hardened_pod(pod)
    (container,) = pod["containers"]
    for probe, path in (
        ("startupProbe", "/health/startup"),
        ("readinessProbe", "/health/ready"),
        ("livenessProbe", "/health/live"),
    ):
        assert container[probe]["httpGet"]["path"] == path
    # The start-up allowance covers the slowest start measured (docs/deployment.md).
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 60
    # A readiness check waits up to 3 s per dependency: the probe must outlast that.
    assert container["readinessProbe"]["timeoutSeconds"] > 3
    assert container["resources"]["requests"]["cpu"]  # the HPA's utilisation base
    env_from = {next(iter(v.values()))["name"] for v in container["envFrom"]}
    assert env_from == {SECRET, CONFIG}
    assert_no_inline_secret(container)


def test_every_workload_in_the_render_is_hardened(objects):
    templates = [o["spec"]["template"] for o in objects if o["kind"] == "Deployment"]
    templates += [
        o["spec"]["jobTemplate"]["spec"]["template"] for o in objects if o["kind"] == "CronJob"
    ]
    assert len(templates) == 2
    for template in templates:
        assert template["spec"]["automountServiceAccountToken"] is False
        assert_hardened_pod(template["spec"])
        for container in template["spec"]["containers"]:
            assert container["resources"]["limits"]["memory"]
            assert_no_inline_secret(container)


def assert_hardened_pod(pod: dict) -> None:
    context = pod["securityContext"]
    assert context["runAsNonRoot"] is True
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}
    empty_dirs = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
    for container in pod["containers"]:
        assert_hardened_container(container["securityContext"], camel=True)
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        assert mounts.get("/tmp") in empty_dirs


def assert_hardened_container(context: dict, camel: bool) -> None:
    def key(name: str) -> str:
        return name if camel else re.sub(r"(?<!^)([A-Z])", r"_\1", name).lower()

    assert context[key("allowPrivilegeEscalation")] is False
    assert context[key("readOnlyRootFilesystem")] is True
    assert context[key("runAsNonRoot")] is True
    assert context["capabilities"]["drop"] == ["ALL"]
    assert context[key("seccompProfile")] == {"type": "RuntimeDefault"}


def assert_no_inline_secret(container: dict) -> None:
    secret_keys = set(load_all(K8S / "secrets.example.yaml")[0]["stringData"])
    for var in container.get("env", []):
        if var["name"] in secret_keys:
            assert "value" not in var, var
            assert var["valueFrom"]["secretKeyRef"]["name"] == SECRET


def test_disruption_budget_autoscaler_and_network_policy(objects):
    (pdb,) = of_kind(objects, "PodDisruptionBudget")
    (hpa,) = of_kind(objects, "HorizontalPodAutoscaler")
    (policy,) = of_kind(objects, "NetworkPolicy")
    (deployment,) = of_kind(objects, "Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 10)
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["cpu"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    ingress_ports = [p for rule in policy["spec"]["ingress"] for p in rule["ports"]]
    assert ingress_ports == [{"protocol": "TCP", "port": 3011}]
    assert all(set(rule) == {"ports"} for rule in policy["spec"]["ingress"])
    egress = {
        (p["protocol"], p["port"]) for rule in policy["spec"]["egress"] for p in rule["ports"]
    }
    assert egress == {
        ("UDP", 53),
        ("TCP", 53),  # DNS
        ("TCP", 6379),
        ("TCP", 6380),  # Redis, plain and TLS
        ("TCP", 5432),  # PostgreSQL
        ("TCP", 443),  # HTTPS
    }


def test_instance_configmap_is_deploy_dagster_yaml():
    """kustomize loads no file from outside deploy/k8s, so the instance file is copied."""
    assert (K8S / "dagster.yaml").read_bytes() == (ROOT / "deploy" / "dagster.yaml").read_bytes()


# --- the Helm values ---------------------------------------------------------------------


def values() -> dict:
    return yaml.safe_load(VALUES.read_text())


def pod_from_values(pod_security: dict, container: dict, volumes: list) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "from-values"},
        "spec": {"securityContext": pod_security, "containers": [container], "volumes": volumes},
    }


def test_helm_code_server_objects_validate_and_are_hardened():
    (code_server,) = values()["dagster-user-deployments"]["deployments"]
    container = {
        "name": "code-server",
        "image": "registry.example.com/queue-pipelines:test",
        "env": code_server["env"],
        "envFrom": [{"secretRef": s} for s in code_server["envSecrets"]]
        + [{"configMapRef": c} for c in code_server["envConfigMaps"]],
        "resources": code_server["resources"],
        "securityContext": code_server["securityContext"],
        "volumeMounts": code_server["volumeMounts"],
    }
    pod = pod_from_values(code_server["podSecurityContext"], container, code_server["volumes"])
    validate_strictly(pod)
    assert_hardened_pod(pod["spec"])
    assert_no_inline_secret(container)


def test_helm_run_launcher_objects_validate_and_are_hardened():
    launcher = values()["runLauncher"]["config"]["k8sRunLauncher"]
    container = {
        "name": "run",
        "image": "registry.example.com/queue-pipelines:test",
        "envFrom": [{"secretRef": s} for s in launcher["envSecrets"]]
        + [{"configMapRef": c} for c in launcher["envConfigMaps"]],
        "resources": launcher["resources"],
        "securityContext": launcher["securityContext"],
        "volumeMounts": launcher["volumeMounts"],
    }
    pod_security = launcher["runK8sConfig"]["podSpecConfig"]["securityContext"]
    pod = pod_from_values(pod_security, container, launcher["volumes"])
    validate_strictly(pod)
    assert_hardened_pod(pod["spec"])


def test_deploy_dagster_yaml_launcher_is_hardened_like_the_helm_values():
    instance = yaml.safe_load((ROOT / "deploy" / "dagster.yaml").read_text())
    config = instance["run_launcher"]["config"]
    launcher = values()["runLauncher"]["config"]["k8sRunLauncher"]
    assert_hardened_container(config["security_context"], camel=False)
    pod = config["run_k8s_config"]["pod_spec_config"]["security_context"]
    assert pod["run_as_non_root"] is True and pod["seccomp_profile"]["type"] == "RuntimeDefault"
    assert config["env_secrets"] == [s["name"] for s in launcher["envSecrets"]]
    assert config["env_config_maps"] == [c["name"] for c in launcher["envConfigMaps"]]
    assert config["resources"] == launcher["resources"]
    assert [m["mount_path"] for m in config["volume_mounts"]] == [
        m["mountPath"] for m in launcher["volumeMounts"]
    ]
    assert config["service_account_name"] == values()["global"]["serviceAccountName"]


def test_deploy_dagster_yaml_run_queue_is_the_helm_values_and_dagster_accepts_it():
    """The chart renders the daemon's run queue from the values, other pods read
    deploy/dagster.yaml: the same limits and parallel launches in both, in Dagster's schema."""
    from dagster._config import process_config
    from dagster._config.field import resolve_to_config_type
    from dagster._core.run_coordinator import QueuedRunCoordinator

    config = yaml.safe_load((ROOT / "deploy" / "dagster.yaml").read_text())["run_coordinator"]
    queue = values()["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]
    assert config["config"] == {
        "max_concurrent_runs": queue["maxConcurrentRuns"],
        "tag_concurrency_limits": queue["tagConcurrencyLimits"],
        "dequeue_use_threads": queue["dequeueUseThreads"],
        "dequeue_num_workers": queue["dequeueNumWorkers"],
    }
    assert config["config"]["dequeue_use_threads"] is True
    schema = resolve_to_config_type(QueuedRunCoordinator.config_type())
    assert process_config(schema, config["config"]).success


def test_no_first_visit_modal_in_any_instance():
    """Dagster's NUX modal covers the Runs page on a first visit: off in make run's instance,
    deploy/dagster.yaml and the chart's instance (additionalInstanceConfig, which the chart
    appends to the dagster.yaml it renders), each in Dagster's schema."""
    from dagster._config import process_config
    from dagster._config.field import resolve_to_config_type
    from dagster._core.instance.config import dagster_instance_config_schema

    helm = values()["additionalInstanceConfig"]
    schema = resolve_to_config_type(dagster_instance_config_schema())
    assert process_config(schema, helm).success
    for config in (
        helm,
        yaml.safe_load((ROOT / "deploy" / "dagster.yaml").read_text()),
        yaml.safe_load((ROOT / "dagster.yaml").read_text()),
    ):
        assert config["nux"] == {"enabled": False}


# --- names against the code --------------------------------------------------------------


def variables_read_by_code() -> set[str]:
    """The variables of the code's own list (queue_pipelines/env_vars.py, which
    tests/env_vars/test_env_vars.py keeps in step with the code), and those the deploy scripts
    read."""
    from queue_pipelines.env_vars import VARIABLES

    names = {v.name for v in VARIABLES}
    for path in (ROOT / "deploy" / "k8s").glob("*.py"):
        names |= set(
            re.findall(r"""environ\.get\(\s*["']([A-Z][A-Z0-9_]+)["']""", path.read_text())
        )
    return names


def keys_with_commented(path: Path, section: str) -> set[str]:
    """The keys of a Secret's stringData or a ConfigMap's data, with the commented-out ones."""
    text = path.read_text()
    listed = set()
    for doc in load_all(path):
        if doc["metadata"]["name"] in (SECRET, CONFIG):
            listed |= set(doc[section])
    return listed | set(re.findall(r"^  # ([A-Z][A-Z0-9_]+): ", text, re.MULTILINE))


def test_secret_and_configmap_keys_are_variables_the_code_reads():
    read = variables_read_by_code()
    assert {"REDIS_URL", "STRIPE_SECRET_KEY", "WEBHOOK_SECRET", "GATEWAY_JWT_SECRET"} <= read
    secret_keys = keys_with_commented(K8S / "secrets.example.yaml", "stringData")
    config_keys = keys_with_commented(K8S / "configmap.yaml", "data")
    assert secret_keys - read == set()
    assert config_keys - read == set()
    assert secret_keys & config_keys == set()


def test_the_secret_holds_exactly_the_secrets_of_the_codes_variable_list():
    """queue_pipelines/env_vars.py lists every variable and whether it is a secret: the
    example Secret holds those marked secret, the ConfigMap only the others."""
    from queue_pipelines.env_vars import VARIABLES

    secrets = {v.name for v in VARIABLES if v.secret}
    plain = {v.name for v in VARIABLES if not v.secret}
    assert keys_with_commented(K8S / "secrets.example.yaml", "stringData") == secrets
    deploy_only = {"RUN_RETENTION_DAYS"}  # read by deploy/k8s/purge_runs.py
    assert keys_with_commented(K8S / "configmap.yaml", "data") <= plain | deploy_only


def test_every_variable_the_code_reads_through_envvar_has_a_place():
    """A setting the code reads with dg.EnvVar (or the gateway's keys) that neither the
    example Secret nor the ConfigMap names would be set nowhere in production."""
    through_envvar = set()
    for folder in ("queue_pipelines", "resources", "sensors"):
        for path in (ROOT / folder).rglob("*.py"):
            through_envvar |= set(
                re.findall(r"""EnvVar\(\s*["']([A-Z][A-Z0-9_]+)["']""", path.read_text())
            )
    through_envvar |= {"GATEWAY_JWT_SECRET", "GATEWAY_METRICS_TOKEN"}
    secret_keys = keys_with_commented(K8S / "secrets.example.yaml", "stringData")
    config_keys = keys_with_commented(K8S / "configmap.yaml", "data")
    assert through_envvar - (secret_keys | config_keys) == set()


def test_every_secret_key_reference_names_a_key_of_the_secret(objects):
    secret_keys = set(load_all(K8S / "secrets.example.yaml")[0]["stringData"])
    instance = yaml.safe_load((ROOT / "deploy" / "dagster.yaml").read_text())
    refs = [
        (v["value_from"]["secret_key_ref"]["name"], v["value_from"]["secret_key_ref"]["key"])
        for v in instance["run_launcher"]["config"]["run_k8s_config"]["container_config"]["env"]
    ]
    (code_server,) = values()["dagster-user-deployments"]["deployments"]
    (deployment,) = of_kind(objects, "Deployment")
    for env in (code_server["env"], deployment["spec"]["template"]["spec"]["containers"][0]["env"]):
        refs += [
            (v["valueFrom"]["secretKeyRef"]["name"], v["valueFrom"]["secretKeyRef"]["key"])
            for v in env
            if "secretKeyRef" in v.get("valueFrom", {})
        ]
    assert len(refs) >= 9
    for name, key in refs:
        assert name == SECRET and key in secret_keys, (name, key)
