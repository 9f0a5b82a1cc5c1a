"""queue_pipelines/sandbox/stack.py without starting anything: what DAGSTER_HOME gets (the
workspace, the instance's dagster.yaml) and the environment an isolated stack's processes
get."""

from __future__ import annotations

import yaml

from queue_pipelines import settings
from queue_pipelines.sandbox import stack


def test_the_workspace_points_at_the_code_server(tmp_path):
    workspace = stack.write_workspace(tmp_path, 4321)
    (entry,) = yaml.safe_load(workspace.read_text())["load_from"]
    assert entry == {
        "grpc_server": {"host": "127.0.0.1", "port": 4321, "location_name": "queue_pipelines"}
    }
    assert "--port" in (argv := stack.code_server_command(4321))
    assert argv[argv.index("--port") + 1] == "4321"


def test_unchanged_the_projects_dagster_yaml_is_copied_comments_and_all(tmp_path):
    stack.write_instance_config(tmp_path)
    assert (tmp_path / "dagster.yaml").read_text() == (
        stack.PROJECT_ROOT / "dagster.yaml"
    ).read_text()


def test_postgres_and_overrides_merge_into_the_projects_config(tmp_path):
    project = stack.instance_config()
    written = stack.write_instance_config(
        tmp_path,
        postgres_url="postgresql://db/dagster",
        overrides={
            "run_coordinator": {"config": {"max_concurrent_runs": 0}},
            "run_monitoring": {"poll_interval_seconds": 5},
        },
    )
    assert yaml.safe_load((tmp_path / "dagster.yaml").read_text()) == written
    assert written["storage"] == {"postgres": {"postgres_url": "postgresql://db/dagster"}}
    coordinator = written["run_coordinator"]
    assert coordinator["config"]["max_concurrent_runs"] == 0
    # What the override did not name stays as the project has it.
    assert coordinator["class"] == project["run_coordinator"]["class"]
    assert (
        coordinator["config"]["tag_concurrency_limits"]
        == project["run_coordinator"]["config"]["tag_concurrency_limits"]
    )
    assert written["run_monitoring"]["poll_interval_seconds"] == 5
    assert (
        written["run_monitoring"]["max_runtime_seconds"]
        == project["run_monitoring"]["max_runtime_seconds"]
    )


def test_an_isolated_stack_takes_the_services_given_and_none_of_the_callers(tmp_path, monkeypatch):
    monkeypatch.setenv("STRIPE_SECRET_KEY", "sk_live_caller")
    monkeypatch.setenv("DAGSTER_POSTGRES_URL", "postgresql://caller/db")
    monkeypatch.setenv("SOLANA_RPC_URL", "http://caller:8899")
    monkeypatch.setenv("SMTP_USERNAME", "caller")
    monkeypatch.setenv("QP_KEPT_BY_TEST", "kept")
    env = stack.isolated_env(
        tmp_path,
        redis_url="redis://127.0.0.1:1/0",
        key_prefix="t1",
        stripe_url="http://127.0.0.1:2",
        smtp_port=3,
        extra={stack.per_type_variable("qp_batch_size", "payment"): "7"},
    )
    config = settings.load(env)
    assert config.home == tmp_path
    assert config.intake_redis_url == "redis://127.0.0.1:1/0"
    assert config.queue_key_prefix == "t1"
    assert config.stripe_is_sandbox and config.stripe_api_base == "http://127.0.0.1:2"
    assert (config.smtp_host, config.smtp_port, config.smtp_username) == ("127.0.0.1", 3, None)
    assert config.dagster_postgres_url is None and config.solana_is_embedded
    assert config.qp_batch_size == {"payment": 7}
    assert env["QP_KEPT_BY_TEST"] == "kept"
