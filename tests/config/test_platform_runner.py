"""Pieces of `make run` that can be exercised without taking over the terminal."""

import os
import re
import signal
import subprocess
import sys

import psutil
import pytest
import redis
import requests

from config.platform_runner import PlatformStartError, private_redis_start
from config.settings.database import database_url_from_config
from tests.conftest import REPOSITORY_ROOT, free_port, wait_for, worker_environment


def test_a_private_redis_is_started_when_nothing_answers_and_stopped_after():
    url = f"redis://127.0.0.1:{free_port()}/0"

    process = private_redis_start(url)
    try:
        assert process is not None
        assert redis.Redis.from_url(url).ping()
    finally:
        process.terminate()
        process.wait(timeout=10)
    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()


def test_an_answering_redis_is_reused(settings):
    assert private_redis_start(settings.REDIS_URL) is None


def test_a_remote_redis_that_does_not_answer_is_an_error_not_a_local_server():
    with pytest.raises(PlatformStartError, match="not a local address"):
        private_redis_start("redis://redis.invalid:6379/0")


@pytest.fixture(scope="module")
def running_platform(django_db_setup, tmp_path_factory):
    """`make run`'s runner (without its migrate and demo steps) on the test database and the
    tests' Redis, in a session of its own as in a terminal; yields (process, base URL, log)."""
    from django.db import connection

    # pytest-django creates the test database only for a session with a django_db test.
    assert connection.settings_dict["NAME"] == connection.settings_dict["TEST"]["NAME"]
    port = free_port()
    log_path = tmp_path_factory.mktemp("platform") / "runner.log"
    command = [
        sys.executable,
        "-u",  # the runner's log lines reach the file as they are printed
        "-c",
        "import sys, django; django.setup(); from config.platform_runner import platform_run; "
        f"sys.exit(platform_run(host='127.0.0.1', port={port}, welcome=[{WELCOME!r}]))",
    ]
    with log_path.open("wb") as log:
        runner = subprocess.Popen(
            command,
            cwd=REPOSITORY_ROOT,
            env=worker_environment(database_url_from_config(connection.settings_dict)),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_for(
            lambda: {"general", "training"} <= _answering_worker_names(base_url),
            what="the runner's web server reporting both workers",
            deadline_seconds=PLATFORM_START_DEADLINE_SECONDS,
            interval=1.0,
        )
        yield runner, base_url, log_path
    finally:
        if runner.poll() is None:
            os.killpg(runner.pid, signal.SIGINT)
            runner.wait(timeout=120)


PLATFORM_START_DEADLINE_SECONDS = 180
WELCOME = "  Flywheel is running (the start-up summary)"


def _answering_worker_names(base_url: str) -> set[str]:
    """The names (before the @) of the workers /healthz reports; empty while it cannot say."""
    try:
        report = requests.get(f"{base_url}/healthz", timeout=10).json()
    except (requests.RequestException, ValueError):
        return set()
    workers = report["components"]["celery"]["detail"].get("workers", [])
    return {worker.split("@")[0] for worker in workers}


def _child(runner: subprocess.Popen, marker: str) -> psutil.Process | None:
    """The runner's child whose command line contains `marker`."""
    for child in psutil.Process(runner.pid).children():
        try:
            if any(marker in argument for argument in child.cmdline()):
                return child
        except psutil.NoSuchProcess:
            continue
    return None


def _web_answers(base_url: str) -> bool:
    return requests.get(f"{base_url}/", timeout=10).status_code == 200


@pytest.mark.django_db(transaction=True)
def test_the_start_up_summary_is_one_block_after_the_workers_banners(running_platform):
    log_path = running_platform[2]

    def summary_printed() -> str | None:
        text = log_path.read_text(errors="replace")
        return text if WELCOME in text else None

    printed = wait_for(
        summary_printed,
        what="the start-up summary",
        deadline_seconds=PLATFORM_START_DEADLINE_SECONDS,
    )

    summary_at = printed.index(WELCOME)
    for worker in ("general@", "training@"):
        ready = re.search(rf"{worker}\S* ready\.", printed)
        assert ready and ready.start() < summary_at, f"{worker} was ready before the summary"
    block = printed[summary_at:].split("\n")
    assert "Press Ctrl-C to stop." in "\n".join(block[:4])
    assert printed[:summary_at].rstrip().endswith("─" * 72)


# Transactional: what the runner's beat and workers commit is emptied after each test.
@pytest.mark.django_db(transaction=True)
def test_a_worker_killed_with_sigkill_is_restarted_while_web_keeps_answering(running_platform):
    runner, base_url, log_path = running_platform
    killed = _child(runner, "general@")
    assert killed is not None

    killed.send_signal(signal.SIGKILL)

    # Every poll also asks the web server: it must answer throughout.
    restarted = wait_for(
        lambda: (
            _web_answers(base_url)
            and (child := _child(runner, "general@")) is not None
            and child.pid != killed.pid
            and child
        ),
        what="the general worker being started again",
        deadline_seconds=60,
    )
    wait_for(
        lambda: _web_answers(base_url) and "general" in _answering_worker_names(base_url),
        what="/healthz reporting the restarted worker",
        deadline_seconds=PLATFORM_START_DEADLINE_SECONDS,
        interval=1.0,
    )
    assert runner.poll() is None
    log = log_path.read_text(errors="replace")
    assert f"worker (pid {killed.pid}) exited with status -9" in log
    assert f"worker restarted (pid {restarted.pid}, restart 1)" in log


@pytest.mark.django_db(transaction=True)
def test_ctrl_c_stops_every_child_of_the_runner(running_platform):
    runner, _, _ = running_platform
    descendants = psutil.Process(runner.pid).children(recursive=True)
    assert len(descendants) >= 4  # web, two workers, beat, and their own children

    os.killpg(runner.pid, signal.SIGINT)  # what Ctrl-C sends to the terminal's foreground group

    assert runner.wait(timeout=120) == 0
    assert [process for process in descendants if _alive(process)] == []


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
