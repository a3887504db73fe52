"""The production image and compose file, checked without a Docker engine: the compose file
against the Compose Specification's JSON schema (vendored by check-jsonschema), and the
Dockerfile's layer order and torch choice by reading and running its steps."""

import json
import re
import subprocess
import sys
import tomllib
from importlib.resources import files

import jsonschema
import pytest
import yaml
from packaging.requirements import Requirement

from tests.conftest import REPOSITORY_ROOT

DOCKER = REPOSITORY_ROOT / "docker"
APP_SERVICES = {"migrate", "web", "worker", "training-worker", "training-worker-gpu", "beat"}


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def dockerfile_instructions() -> list[str]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    lines = [
        line
        for line in (DOCKER / "Dockerfile").read_text().splitlines()
        if not line.lstrip().startswith("#")
    ]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    return [" ".join(line.split()) for line in joined.splitlines() if line.strip()]


def test_the_compose_file_follows_the_compose_specification(compose):
    schema_file = files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    schema = json.loads(schema_file.read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)

    errors = [f"{list(error.path)}: {error.message}" for error in validator.iter_errors(compose)]

    assert errors == []


def test_services_volumes_and_dependencies_are_all_declared(compose):
    services = compose["services"]
    for name, service in services.items():
        assert set(service.get("depends_on", [])) <= set(services), name
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if not source.startswith("."):
                assert source in compose["volumes"], (name, source)
    assert APP_SERVICES | {"db", "redis", "minio", "minio-bucket", "proxy"} == set(services)


def test_only_the_tls_proxy_is_published_and_the_app_trusts_it(compose):
    services = compose["services"]
    published = {name for name, service in services.items() if "ports" in service}
    assert published == {"proxy"}
    assert services["proxy"]["image"].startswith("caddy:")
    assert "./Caddyfile:/etc/caddy/Caddyfile:ro" in services["proxy"]["volumes"]
    for name in APP_SERVICES:
        environment = services[name]["environment"]
        assert environment["SECURE_COOKIES"] == "${SECURE_COOKIES:-true}", name
        assert environment["FLYWHEEL_TRUST_X_FORWARDED_FOR"] == "true", name
        assert environment["ALLOWED_HOSTS"].startswith("${ALLOWED_HOSTS:-${SITE_ADDRESS"), name
        assert environment["FLYWHEEL_ARTIFACTS_URL"].startswith("${FLYWHEEL_ARTIFACTS_URL:-s3://")
        assert environment["FLYWHEEL_S3_ENDPOINT_URL"].endswith("http://minio:9000}"), name

    caddyfile = (DOCKER / "Caddyfile").read_text()
    assert "{$SITE_ADDRESS:localhost} {" in caddyfile
    assert "reverse_proxy web:8000" in caddyfile


def test_dependencies_are_installed_before_the_code_is_copied():
    instructions = dockerfile_instructions()
    copy_code = instructions.index("COPY . .")
    install_torch = next(i for i, text in enumerate(instructions) if "torch==" in text)
    install_dependencies = next(
        i for i, text in enumerate(instructions) if "pip install -r" in text
    )
    copies_before_code = [text for text in instructions[:copy_code] if text.startswith("COPY")]

    assert install_torch < install_dependencies < copy_code
    assert copies_before_code == ["COPY pyproject.toml docker/dependencies.py /tmp/build/"]


def test_the_dependency_list_the_image_installs_is_pyprojects():
    pyproject = REPOSITORY_ROOT / "pyproject.toml"
    printed = subprocess.run(
        [sys.executable, str(DOCKER / "dependencies.py"), str(pyproject)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()

    declared = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    assert printed == declared
    assert "torch" in {Requirement(line).name for line in printed}


@pytest.mark.parametrize(
    ("variant", "expected"),
    [
        ("cpu", "pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0"),
        ("cuda", "pip install torch==2.13.0"),
    ],
)
def test_the_torch_build_is_chosen_by_the_build_argument(variant, expected):
    [torch_step] = [text for text in dockerfile_instructions() if "torch==" in text]
    assert "ARG TORCH_VARIANT=cpu" in dockerfile_instructions()
    # The step itself, run by sh with `pip` standing in as a function that prints its call.
    script = 'pip() { echo pip "$@"; }\n' + torch_step.removeprefix("RUN ")

    ran = subprocess.run(
        ["sh", "-c", script],
        env={"TORCH_VARIANT": variant, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
    )

    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.split() == expected.split()


def test_an_unknown_torch_build_stops_the_image_build():
    [torch_step] = [text for text in dockerfile_instructions() if "torch==" in text]
    ran = subprocess.run(
        ["sh", "-c", 'pip() { echo pip "$@"; }\n' + torch_step.removeprefix("RUN ")],
        env={"TORCH_VARIANT": "rocm", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
    )
    assert ran.returncode == 64
    assert "TORCH_VARIANT must be cpu or cuda, not 'rocm'" in ran.stderr
    assert ran.stdout == ""


def test_env_files_with_secrets_stay_out_of_the_image_and_the_repository():
    ignored_by_docker = (REPOSITORY_ROOT / ".dockerignore").read_text().splitlines()
    ignored_by_git = (REPOSITORY_ROOT / ".gitignore").read_text().splitlines()

    assert "**/.env" in ignored_by_docker
    assert {".env", "docker/.env"} <= set(ignored_by_git)
