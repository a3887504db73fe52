"""Fixtures that start real services: the embedded PostgreSQL (through pytest-django's test
database), the machine's Redis (on a database of the tests' own) and a real Celery worker."""

import os
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis
import requests
from django.conf import settings

from config.queues import Queue
from config.settings.database import database_url_from_config
from config.workers import (
    WorkerExited,
    WorkerProcess,
    poll_until,
    unique_hostname,
    worker_command,
    workers_wait_ready,
)

WORKER_START_DEADLINE_SECONDS = 90
REPOSITORY_ROOT = Path(__file__).resolve().parent.parent
# Where browser tests leave their screenshots for a human to look over.
SCREENSHOTS = Path(
    os.environ.get("FLYWHEEL_SCREENSHOTS_DIR", REPOSITORY_ROOT / "var" / "screenshots")
)


def free_port() -> int:
    """A loopback port nothing listens on now, for a server a test starts."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session", autouse=True)
def test_redis():
    """The tests' Redis database, emptied at the start so no task of an earlier run is left."""
    client = redis.Redis.from_url(settings.REDIS_URL)
    try:
        client.ping()
    except redis.RedisError as error:
        pytest.exit(f"Redis at {settings.REDIS_URL} does not answer ({error})", returncode=3)
    client.flushdb()
    yield client
    client.close()


def wait_for(condition, *, what: str, deadline_seconds: float, interval: float = 0.2):
    """Poll `condition` until it returns something truthy; fail the test at the deadline."""
    try:
        return poll_until(
            condition, what=what, deadline_seconds=deadline_seconds, interval_seconds=interval
        )
    except TimeoutError as error:
        pytest.fail(str(error))


def worker_environment(database_url: str) -> dict[str, str]:
    """A worker on the test database and the tests' Redis database."""
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.test",
        "DATABASE_URL": database_url,
        "REDIS_URL": settings.REDIS_URL,
        "FLYWHEEL_TEST_REDIS_URL": settings.REDIS_URL,
        "FLYWHEEL_ARTIFACTS_DIR": str(settings.FLYWHEEL_ARTIFACTS_DIR),
        "FLYWHEEL_GOLDEN_SETS_DIR": str(settings.FLYWHEEL_GOLDEN_SETS_DIR),
    }


def worker_start(
    *, database_url: str, log_path: Path, queues: list[str], name: str = "test", wait: bool = True
):
    """A real `celery worker` subprocess, answering a ping before this returns when `wait`
    (a solo worker that takes a task at once cannot answer pings until it is done)."""
    hostname = unique_hostname(name)
    worker = WorkerProcess.start(
        name=name,
        command=worker_command(hostname=hostname, queues=queues),
        hostname=hostname,
        environment=worker_environment(database_url),
        cwd=REPOSITORY_ROOT,
        log_path=log_path,
    )
    if not wait:
        return worker
    try:
        workers_wait_ready([worker], deadline_seconds=WORKER_START_DEADLINE_SECONDS)
    except (TimeoutError, WorkerExited) as error:
        pytest.fail(f"{error}\n{worker.log_tail()}")
    return worker


@pytest.fixture(scope="module")
def celery_worker(django_db_setup, tmp_path_factory):
    """A real worker consuming every queue. Module-scoped: it starts once per test module and
    is gone after it, so modules that need no worker really run without one."""
    from django.db import connection

    worker = worker_start(
        database_url=database_url_from_config(connection.settings_dict),
        log_path=tmp_path_factory.mktemp("celery") / "worker.log",
        queues=[queue.value for queue in Queue],
    )
    try:
        yield worker
    finally:
        worker.stop()


DEMO_KNOWLEDGE_BASE = REPOSITORY_ROOT / "demo" / "knowledge_base"


@pytest.fixture
def project(db):
    from tests.factories import ProjectFactory

    return ProjectFactory()


@pytest.fixture
def secret_key(project) -> str:
    from flywheel.services import api_key_create

    return api_key_create(project=project, kind="secret", name="server").raw_key


@pytest.fixture
def public_key(project) -> str:
    from flywheel.services import api_key_create

    return api_key_create(
        project=project, kind="public", name="widget", allowed_origins=["https://app.example"]
    ).raw_key


@pytest.fixture
def admin_key(project) -> str:
    """A secret key with every scope: datasets, jobs and versions too."""
    from flywheel.models import ApiKey
    from flywheel.services import api_key_create

    return api_key_create(
        project=project, kind="secret", name="admin", scopes=ApiKey.Scope.values
    ).raw_key


def bearer(key: str) -> dict:
    return {"HTTP_AUTHORIZATION": f"Bearer {key}"}


def index_folder(project, folder: Path) -> None:
    """Load and index a folder of documents inline (what `load_documents` does)."""
    from flywheel.services import document_index, documents_load_folder

    for result in documents_load_folder(project=project, folder=folder):
        document_index(document_id=result.document.pk)


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="session")
def browser():
    """Debian's headless Chromium driven by Playwright (which cannot download its own)."""
    # Playwright's sync API runs an event loop in this thread; the ORM calls that tests make
    # between browser steps are still synchronous and safe.
    os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS
        )
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(15_000)
    yield page
    context.close()


def user_with_role(project, role: str, username: str | None = None):
    """A dashboard user holding `role` in `project`; the password is 'pw-<username>'."""
    from django.contrib.auth import get_user_model

    from feedback.models import ProjectMembership

    username = username or f"{role}-{project.slug}"
    user = get_user_model().objects.create_user(username=username, password=f"pw-{username}")
    ProjectMembership.objects.create(user=user, project=project, role=role)
    return user


@pytest.fixture
def signed_in_page(page, live_server, transactional_db, project):
    """The page, signed in as a viewer of `project` through the sign-in form; console errors
    and uncaught exceptions land in page.problems."""
    user = user_with_role(project, "viewer")
    page.problems = []
    page.on(
        "console",
        lambda message: (
            message.type == "error"
            and page.problems.append(f"{message.text} ({message.location['url']})")
        ),
    )
    page.on("pageerror", lambda error: page.problems.append(str(error)))
    page.goto(f"{live_server.url}/accounts/login/")
    page.fill("#id_username", user.username)
    page.fill("#id_password", f"pw-{user.username}")
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}/dashboard/{project.slug}/")
    return page


@pytest.fixture(scope="module")
def one_torch_thread():
    """The test machine's cores are shared with PostgreSQL, a Celery worker and other runs;
    there, torch's OpenMP threads wait on each other and two run several times slower than
    one. Production leaves the thread count to the environment."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


WEB_START_DEADLINE_SECONDS = 120


def _answers(url: str) -> bool:
    try:
        requests.get(url, timeout=10)
    except (requests.ConnectionError, requests.Timeout):  # not listening, or still loading
        return False
    return True


@contextmanager
def gunicorn_serving(
    *, environment: dict[str, str], log_path: Path, ready_path: str = "/healthz"
) -> Iterator[tuple[subprocess.Popen, str]]:
    """gunicorn exactly as `make run` starts it (two worker processes, gunicorn.conf.py),
    with `environment`; (its master process, its base URL) while it runs."""
    from config.platform_runner import child_commands

    port = free_port()
    with log_path.open("wb") as log:
        web = subprocess.Popen(
            child_commands(host="127.0.0.1", port=port)["web"],
            cwd=REPOSITORY_ROOT,
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_for(
            lambda: web.poll() is not None or _answers(f"{base_url}{ready_path}"),
            what="gunicorn answering",
            deadline_seconds=WEB_START_DEADLINE_SECONDS,
            interval=0.5,
        )
        assert web.poll() is None, log_path.read_text(errors="replace")
        yield web, base_url
    finally:
        web.terminate()
        web.wait(timeout=60)


@contextmanager
def gunicorn_on_the_test_database(*, log_path: Path, environment: dict[str, str]) -> Iterator[str]:
    """gunicorn as `make run` starts it on the test database; its base URL while it runs."""
    from django.db import connection

    environment = (
        worker_environment(database_url_from_config(connection.settings_dict))
        | {"FLYWHEEL_TORCH_THREADS": "1"}
        | environment
    )
    with gunicorn_serving(environment=environment, log_path=log_path, ready_path="/metrics") as (
        _,
        base_url,
    ):
        yield base_url
