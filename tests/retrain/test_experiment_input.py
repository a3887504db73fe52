"""Hostile values on the experiment endpoints: each is a 4xx JSON error naming the field (or,
for an id beyond any stored one, a 404), never a 500, and starts or stops nothing."""

import pytest

from flywheel.models import ModelVersion
from flywheel.services import api_key_create
from flywheel.services.model_versions import model_version_production_ensure
from retrain.models import Experiment
from tests.conftest import bearer

HOSTILE_STARTS = [
    ('{"candidate_model": "lora\\u0000-1"}', "candidate_model"),
    ('{"candidate_model": "lora-\\ud800"}', "candidate_model"),
    ('{"candidate_model": "lora-1", "candidate_share": NaN}', "candidate_share"),
    ('{"candidate_model": "lora-1", "candidate_share": Infinity}', "candidate_share"),
    ('{"candidate_model": "lora-1", "candidate_share": 1e400}', "candidate_share"),
    ('{"candidate_model": "lora-1", "max_duration_hours": -Infinity}', "max_duration_hours"),
    ('{"candidate_model": "lora-1", "max_duration_hours": 1e308}', "max_duration_hours"),
    (
        '{"candidate_model": "lora-1", "min_ratings_per_arm": 99999999999999999999}',
        "min_ratings_per_arm",
    ),
    ('{"candidate_index_version": -1}', "candidate_index_version"),
    ('{"candidate_index_version": 4294967296}', "candidate_index_version"),
    ('{"candidate_model": "lora-1", "error_rate_factor": -2}', "error_rate_factor"),
    ('{"candidate_model": "lora-1", "latency_p95_factor": 1e308}', "latency_p95_factor"),
    ('{"candidate_model": "lora-1", "no_difference_margin": -1}', "no_difference_margin"),
    ('{"candidate_model": "lora-1", "shadow_share": 2}', "shadow_share"),
]


@pytest.fixture
def versions_key(project) -> str:
    return api_key_create(project=project, kind="secret", name="ops", scopes=["versions"]).raw_key


def _post(client, path: str, body: str, key: str):
    return client.post(path, data=body, content_type="application/json", **bearer(key))


@pytest.mark.django_db
@pytest.mark.parametrize("body, field", HOSTILE_STARTS, ids=[f for _, f in HOSTILE_STARTS])
def test_a_hostile_value_in_a_start_is_a_400_naming_its_field(
    client, project, versions_key, body, field
):
    model_version_production_ensure(project=project)
    ModelVersion.objects.create(project=project, name="lora-1", base_model="")

    response = _post(client, "/api/v1/experiments", body, versions_key)

    assert response.status_code == 400, response.content
    assert response.json()["error"]["param"] == field
    assert not Experiment.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    "body, field",
    [
        ('{"reason": "a\\u0000b"}', "reason"),
        ('{"reason": "\\udfff"}', "reason"),
        ('{"reason": 1e400}', "reason"),
    ],
)
def test_a_hostile_stop_reason_is_a_400_naming_it(client, versions_key, body, field):
    response = _post(client, "/api/v1/experiments/1/stop", body, versions_key)

    assert response.status_code == 400, response.content
    assert response.json()["error"]["param"] == field


@pytest.mark.django_db
@pytest.mark.parametrize("experiment_id", ["99999999999999999999", "-1"])
def test_an_experiment_id_out_of_range_is_not_found(client, versions_key, experiment_id):
    read = client.get(f"/api/v1/experiments/{experiment_id}", **bearer(versions_key))
    stop = _post(client, f"/api/v1/experiments/{experiment_id}/stop", "{}", versions_key)

    for response in (read, stop):
        assert response.status_code == 404, response.content
        assert response.json()["error"]["code"] == "not_found"


@pytest.mark.django_db
def test_a_stop_without_a_body_stops_without_a_reason(client, project, versions_key):
    model_version_production_ensure(project=project)
    ModelVersion.objects.create(project=project, name="lora-1", base_model="")
    started = _post(client, "/api/v1/experiments", '{"candidate_model": "lora-1"}', versions_key)
    assert started.status_code == 201, started.content

    stopped = _post(client, f"/api/v1/experiments/{started.json()['id']}/stop", "", versions_key)

    assert stopped.status_code == 200, stopped.content
    assert stopped.json()["status"] == "stopped"


@pytest.mark.django_db
def test_a_start_without_a_body_is_refused_by_the_rules_not_as_bad_json(client, versions_key):
    response = _post(client, "/api/v1/experiments", "", versions_key)

    assert response.status_code in (400, 404, 409), response.content
    assert response.json()["error"]["code"] != "invalid_json"
