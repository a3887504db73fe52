"""The simulated users, reviewers' tools and admin reach Flywheel through its HTTP API, served
in-process by Django's test client: the whole view stack (authentication, validation, the
chat view, logging) runs as for a real request, without a server or a port."""

import json
from collections.abc import Callable

from django.test import Client

from config.workers import poll_until as config_poll_until
from retrain.models import Job


class LoopBenchError(RuntimeError):
    """The loop could not go on: an API call failed, a job failed, or a deadline passed."""


# localhost is in the default ALLOWED_HOSTS; the test client's own "testserver" is allowed
# only under the test runner.
SERVER_NAME = "localhost"
POLL_INTERVAL_SECONDS = 0.5


def poll_until(condition: Callable, *, what: str, deadline_seconds: float):
    """Call `condition` until it returns something truthy, and return that; LoopBenchError at
    the deadline."""
    try:
        return config_poll_until(
            condition,
            what=what,
            deadline_seconds=deadline_seconds,
            interval_seconds=POLL_INTERVAL_SECONDS,
        )
    except TimeoutError as error:
        raise LoopBenchError(str(error)) from error


class FlywheelApi:
    """The endpoints the loop uses, with a project's secret key."""

    def __init__(self, *, secret_key: str):
        self._client = Client(
            SERVER_NAME=SERVER_NAME, headers={"Authorization": f"Bearer {secret_key}"}
        )

    def _call(self, method: str, path: str, body: dict | None = None, *, expect: int) -> dict:
        if method == "get":
            response = self._client.get(path)
        else:
            response = self._client.post(
                path, data=json.dumps(body or {}), content_type="application/json"
            )
        if response.status_code != expect:
            raise LoopBenchError(
                f"{method.upper()} {path} answered {response.status_code}: "
                f"{response.content[:500].decode(errors='replace')}"
            )
        return response.json()

    def chat(
        self, *, question: str, rag: bool, max_tokens: int, top_k: int, user: str, metadata: dict
    ) -> dict:
        return self._call(
            "post",
            "/v1/chat/completions",
            {
                "messages": [{"role": "user", "content": question}],
                "max_tokens": max_tokens,
                "user": user,
                "flywheel": {"rag": rag, "top_k": top_k, "metadata": metadata},
            },
            expect=200,
        )

    def interaction(self, interaction_id: str) -> dict:
        return self._call("get", f"/api/v1/interactions/{interaction_id}", expect=200)

    def ratings_submit(self, ratings: list[dict]) -> list[dict]:
        return self._call("post", "/api/v1/ratings", {"ratings": ratings}, expect=201)["ratings"]

    def job_start(self, kind: str, parameters: dict | None = None) -> dict:
        return self._call(
            "post", "/api/v1/jobs", {"kind": kind, "parameters": parameters or {}}, expect=202
        )

    def job(self, job_id: int) -> dict:
        return self._call("get", f"/api/v1/jobs/{job_id}", expect=200)

    def jobs(self) -> list[dict]:
        return self._call("get", "/api/v1/jobs?limit=500", expect=200)

    def job_wait(self, job_id: int, *, deadline_seconds: float) -> dict:
        """The finished job; LoopBenchError unless it succeeded."""

        def finished() -> dict | None:
            job = self.job(job_id)
            return job if job["state"] in Job.FINISHED_STATES else None

        job = poll_until(
            finished, what=f"job {job_id} finishing", deadline_seconds=deadline_seconds
        )
        if job["state"] != Job.State.SUCCEEDED:
            raise LoopBenchError(
                f"{job['kind']} job {job_id} {job['state']}: {job['error'][-1500:]}"
            )
        return job

    def model_versions(self) -> list[dict]:
        return self._call("get", "/api/v1/model-versions", expect=200)

    def index_versions(self) -> list[dict]:
        return self._call("get", "/api/v1/index-versions", expect=200)

    def experiment_start(self, parameters: dict) -> dict:
        return self._call("post", "/api/v1/experiments", parameters, expect=201)

    def experiment(self, experiment_id: int) -> dict:
        return self._call("get", f"/api/v1/experiments/{experiment_id}", expect=200)

    def experiment_stop(self, experiment_id: int, *, reason: str) -> dict:
        return self._call(
            "post", f"/api/v1/experiments/{experiment_id}/stop", {"reason": reason}, expect=200
        )

    def model_version_promote(self, version_id: int, *, reason: str) -> dict:
        return self._call(
            "post",
            f"/api/v1/model-versions/{version_id}/promote",
            {"reason": reason},
            expect=200,
        )
