"""The Kubernetes Job of a payment_job run, built by dagster-k8s's own K8sRunLauncher without
a cluster (issue 12): the launcher is configured from deploy/dagster.yaml's run_launcher, the
run comes from the code location as the Helm chart deploys it (its container context built
from deploy/helm/values.yaml, as the chart's `dagsterUserDeployments.k8sContainerContext`
helper does), and the launcher's call to the Kubernetes API is where the Job is taken.

The run is created with empty run config: the launcher never reads it, so the test holds
whatever payment_job's config becomes (one request or a batch)."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import kubernetes
import kubernetes_validate
import pytest
import yaml
from dagster._config import process_config
from dagster._core.code_pointer import ModuleCodePointer
from dagster._core.launcher import LaunchRunContext
from dagster._core.origin import (
    DEFAULT_DAGSTER_ENTRY_POINT,
    JobPythonOrigin,
    RepositoryPythonOrigin,
)
from dagster._core.remote_origin import (
    GrpcServerCodeLocationOrigin,
    RemoteJobOrigin,
    RemoteRepositoryOrigin,
)
from dagster._core.test_utils import create_run_for_test
from dagster_k8s import K8sRunLauncher

ROOT = Path(__file__).resolve().parent.parent
RELEASE = "dagster"
NAMESPACE = "queue-pipelines"
IMAGE = "registry.example.com/queue-pipelines:3f2c1ab"
# Values the launching process has in its environment: none may reach the Job inline.
PROCESS_SECRETS = {
    "REDIS_URL": "rediss://:process-redis-password@redis.internal:6380/0",
    "STRIPE_SECRET_KEY": "sk_live_process_secret_value",
    "DAGSTER_POSTGRES_URL": "postgresql://dagster:process-pg-password@db:5432/dagster",
    # Production mode (a real-looking Stripe key) refuses the sandbox webhook secret.
    "WEBHOOK_SECRET": "whsec_process_webhook_secret_value",
}


class RecordingBatchApi:
    """Stands in for the Kubernetes API server, which this machine does not have."""

    def __init__(self):
        self.created: list[tuple[str, kubernetes.client.V1Job]] = []

    def create_namespaced_job(self, body, namespace, **_kwargs):
        self.created.append((namespace, body))
        return body


def chart_container_context(values: dict) -> dict:
    """What the chart puts in DAGSTER_CLI_API_GRPC_CONTAINER_CONTEXT for the code server
    (dagster-user-deployments' k8sContainerContext helper, for the keys these values use)."""
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    assert deployment["includeConfigInLaunchedRuns"]["enabled"]
    k8s = {
        "image_pull_policy": deployment["image"]["pullPolicy"],
        "env_config_maps": [
            f"{RELEASE}-dagster-user-deployments-{deployment['name']}-user-env",
            *(c["name"] for c in deployment.get("envConfigMaps", [])),
        ],
        "env_secrets": [s["name"] for s in deployment.get("envSecrets", [])],
        "volume_mounts": deployment.get("volumeMounts", []),
        "volumes": deployment.get("volumes", []),
        "resources": deployment["resources"],
        "namespace": NAMESPACE,
        "service_account_name": values["global"]["serviceAccountName"],
        "env": deployment.get("env", []),
    }
    return {"k8s": {key: value for key, value in k8s.items() if value}}


def launcher_from_deploy_dagster_yaml(kubeconfig: Path, api: RecordingBatchApi) -> K8sRunLauncher:
    instance_yaml = yaml.safe_load((ROOT / "deploy" / "dagster.yaml").read_text())
    section = instance_yaml["run_launcher"]
    assert (section["module"], section["class"]) == ("dagster_k8s", "K8sRunLauncher")
    processed = process_config(K8sRunLauncher.config_type(), section["config"])
    assert processed.success, processed.errors
    config = dict(processed.value)
    # Out of a cluster: read a kubeconfig instead of the pod's service account token.
    config.update(load_incluster_config=False, kubeconfig_file=str(kubeconfig))
    return K8sRunLauncher(**config, k8s_client_batch_api=api)


@pytest.fixture(scope="module")
def kubeconfig(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("k8s") / "kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "none", "cluster": {"server": "https://127.0.0.1:1"}}],
                "users": [{"name": "none", "user": {"token": "unused"}}],
                "contexts": [{"name": "none", "context": {"cluster": "none", "user": "none"}}],
                "current-context": "none",
            }
        )
    )
    return path


@pytest.fixture(scope="module")
def run_job(kubeconfig) -> dict:
    """The Job the launcher submits for one payment_job run, as the API server would get it."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv("DAGSTER_K8S_PIPELINE_RUN_NAMESPACE", NAMESPACE)
        for name, value in PROCESS_SECRETS.items():
            monkeypatch.setenv(name, value)
        return launch_one_payment_run(kubeconfig)


def launch_one_payment_run(kubeconfig: Path) -> dict:
    from queue_pipelines.definitions import defs

    job = defs.get_job_def("payment_job")
    values = yaml.safe_load((ROOT / "deploy" / "helm" / "values.yaml").read_text())
    location = values["dagster-user-deployments"]["deployments"][0]
    api = RecordingBatchApi()
    launcher = launcher_from_deploy_dagster_yaml(kubeconfig, api)
    origin = JobPythonOrigin(
        job.name,
        RepositoryPythonOrigin(
            executable_path="/opt/venv/bin/python",
            code_pointer=ModuleCodePointer("queue_pipelines.definitions", "defs", None),
            container_image=IMAGE,
            entry_point=DEFAULT_DAGSTER_ENTRY_POINT,
            container_context=chart_container_context(values),
        ),
    )
    remote_origin = RemoteJobOrigin(
        RemoteRepositoryOrigin(
            GrpcServerCodeLocationOrigin(
                host=f"{RELEASE}-{location['name']}",
                port=location["port"],
                location_name=location["name"],
            ),
            "__repository__",
        ),
        job.name,
    )
    with dg.instance_for_test() as instance:
        launcher.register_instance(instance)
        run = create_run_for_test(
            instance,
            job_name=job.name,
            run_config={},
            tags={**job.tags, "queue/tenant": "acme", "dagster/priority": "0"},
            job_code_origin=origin,
            remote_job_origin=remote_origin,
        )
        launcher.launch_run(LaunchRunContext(dagster_run=run, workspace=None))
        ((namespace, body),) = api.created
        assert namespace == NAMESPACE
        return {
            "run_id": run.run_id,
            "job": kubernetes.client.ApiClient().sanitize_for_serialization(body),
            "values": values,
        }


def test_the_run_job_is_a_valid_kubernetes_1_32_job(run_job):
    kubernetes_validate.validate(run_job["job"], "1.32.0", strict=True)


def test_image_command_labels_and_service_account(run_job):
    job = run_job["job"]
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == IMAGE
    assert container["imagePullPolicy"] == "IfNotPresent"
    assert container["args"][:3] == ["dagster", "api", "execute_run"]
    execute_args = json.loads(container["args"][3])
    assert run_job["run_id"] in json.dumps(execute_args)
    assert pod["restartPolicy"] == "Never"
    assert pod["serviceAccountName"] == "dagster"
    assert pod["automountServiceAccountToken"] is False
    for labels in (job["metadata"]["labels"], job["spec"]["template"]["metadata"]["labels"]):
        assert labels["dagster/job"] == "payment_job"
        assert labels["dagster/run-id"] == run_job["run_id"]
        assert labels["dagster/code-location"] == "queue-pipelines"
        assert labels["app.kubernetes.io/component"] == "run_worker"
    # The run is the retry unit: Kubernetes does not start a second pod for it.
    assert job["spec"]["backoffLimit"] == 0


def test_env_comes_from_the_secret_and_configmap_never_inline(run_job):
    (container,) = run_job["job"]["spec"]["template"]["spec"]["containers"]
    env_from = [(k, v["name"]) for ref in container["envFrom"] for k, v in ref.items()]
    assert ("secretRef", "queue-pipelines-env") in env_from
    assert ("configMapRef", "queue-pipelines-config") in env_from
    env = {var["name"]: var for var in container["env"]}
    assert len(env) == len(container["env"]), "an env var is set twice"
    for name in ("REDIS_URL", "STRIPE_SECRET_KEY", "DAGSTER_POSTGRES_URL"):
        assert env[name]["valueFrom"]["secretKeyRef"] == {
            "name": "queue-pipelines-env",
            "key": name,
        }
        assert "value" not in env[name]
    serialized = json.dumps(run_job["job"])
    for secret in PROCESS_SECRETS.values():
        assert secret not in serialized
    assert env["DAGSTER_RUN_JOB_NAME"]["value"] == "payment_job"


def test_resources_and_hardening(run_job):
    pod = run_job["job"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    launcher_values = run_job["values"]["runLauncher"]["config"]["k8sRunLauncher"]
    assert container["resources"] == launcher_values["resources"]
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 10001,
        "runAsGroup": 10001,
        "fsGroup": 10001,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert len(volumes) == len(pod["volumes"]), "a volume is declared twice"
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert len(mounts) == len(container["volumeMounts"]), "a path is mounted twice"
    for path in ("/tmp", "/opt/dagster/dagster_home"):
        assert "emptyDir" in volumes[mounts[path]]
