"""Pieces of `make run` that can be exercised without taking over the terminal."""

import socket

import pytest
import redis

from config.platform_runner import PlatformStartError, private_redis_start


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_private_redis_is_started_when_nothing_answers_and_stopped_after():
    url = f"redis://127.0.0.1:{_free_port()}/0"

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
