from dataclasses import dataclass
from datetime import timedelta

from django.utils import timezone

from flywheel.models import ApiKey, Project

# Recording every use would turn each API call into a write; once a minute is enough to see
# which keys are alive.
LAST_USED_RESOLUTION = timedelta(minutes=1)


@dataclass(frozen=True)
class CreatedApiKey:
    api_key: ApiKey
    raw_key: str  # shown once; only its hash is stored


def normalise_origin(origin: str) -> str:
    return origin.strip().rstrip("/").lower()


def api_key_create(
    *,
    project: Project,
    kind: str,
    name: str,
    allowed_origins: list[str] | None = None,
) -> CreatedApiKey:
    if kind not in ApiKey.Kind.values:
        raise ValueError(f"kind must be one of {ApiKey.Kind.values}")
    raw_key = ApiKey.generate_raw_key(kind)
    api_key = ApiKey.objects.create(
        project=project,
        kind=kind,
        name=name,
        display_prefix=raw_key[:12],
        key_hash=ApiKey.hash_key(raw_key),
        allowed_origins=[normalise_origin(origin) for origin in allowed_origins or []],
    )
    return CreatedApiKey(api_key=api_key, raw_key=raw_key)


def api_key_revoke(*, api_key: ApiKey) -> ApiKey:
    if api_key.revoked_at is None:
        api_key.revoked_at = timezone.now()
        api_key.save(update_fields=["revoked_at", "updated_at"])
    return api_key


def api_key_record_use(*, api_key: ApiKey) -> None:
    now = timezone.now()
    if api_key.last_used_at and now - api_key.last_used_at < LAST_USED_RESOLUTION:
        return
    ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=now)
    api_key.last_used_at = now
