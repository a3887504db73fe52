"""API keys: created with their scopes and origins checked here, whatever asks for one (the
dashboard, the admin, `create_api_key`, the demo bootstrap), revoked, and their use recorded."""

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import urlsplit

from django.utils import timezone

from flywheel.models import ApiKey, Project

# Recording every use would turn each API call into a write; once a minute is enough to see
# which keys are alive.
LAST_USED_RESOLUTION = timedelta(minutes=1)

NAME_MAX_LENGTH = ApiKey._meta.get_field("name").max_length or 200

# A host name: dot-separated labels of letters, digits and inner hyphens (single-label
# names such as an intranet host included).
_HOST = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)(\.(?!-)[a-z0-9-]{1,63}(?<!-))*\.?", re.IGNORECASE)


class ApiKeyInvalid(ValueError):
    """A key that may not be created as asked; `field` names the part at fault."""

    def __init__(self, message: str, *, field: str):
        super().__init__(message)
        self.message = message
        self.field = field


@dataclass(frozen=True)
class CreatedApiKey:
    api_key: ApiKey
    raw_key: str  # shown once; only its hash is stored


def normalise_origin(origin: str) -> str:
    return origin.strip().rstrip("/").lower()


def is_web_origin(value: str) -> bool:
    """scheme://host[:port] and nothing more: what a browser sends in its Origin header. A
    trailing slash is tolerated (and dropped when stored); a path, query or credentials are
    not."""
    parts = urlsplit(value)
    try:
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range
    except ValueError:
        return False
    host = parts.hostname or ""
    return (
        parts.scheme in ("http", "https")
        and bool(_HOST.fullmatch(host) or _is_ip_address(host))
        and parts.path in ("", "/")
        and not parts.query
        and not parts.fragment
        and "?" not in value
        and "#" not in value
        and parts.username is None
        and parts.password is None
    )


def _is_ip_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _checked_origins(*, kind: str, allowed_origins: Iterable[str]) -> list[str]:
    origins = [origin.strip() for origin in allowed_origins if origin.strip()]
    if kind == ApiKey.Kind.SECRET:
        if origins:
            raise ApiKeyInvalid(
                "Secret keys are used from servers and take no origins; choose a public key.",
                field="allowed_origins",
            )
        return []
    invalid = [origin for origin in origins if not is_web_origin(origin)]
    if invalid:
        raise ApiKeyInvalid(
            "Not an http(s) origin (scheme://host[:port], no path or query): " + ", ".join(invalid),
            field="allowed_origins",
        )
    if not origins:
        raise ApiKeyInvalid(
            "A public key needs at least one allowed origin: the sites its widget runs on.",
            field="allowed_origins",
        )
    return list(dict.fromkeys(normalise_origin(origin) for origin in origins))


def _checked_scopes(*, kind: str, scopes: Iterable[str] | None) -> list[str]:
    if scopes is None:
        secret = kind == ApiKey.Kind.SECRET
        return [
            str(scope)
            for scope in (ApiKey.DEFAULT_SECRET_SCOPES if secret else ApiKey.PUBLIC_SCOPES)
        ]
    chosen = list(dict.fromkeys(scopes))
    unknown = [scope for scope in chosen if scope not in ApiKey.Scope.values]
    if unknown:
        raise ApiKeyInvalid(
            f"Unknown scope(s): {', '.join(unknown)}; the scopes are "
            f"{', '.join(ApiKey.Scope.values)}.",
            field="scopes",
        )
    if not chosen:
        raise ApiKeyInvalid("A key needs at least one scope.", field="scopes")
    if kind == ApiKey.Kind.PUBLIC and chosen != [ApiKey.Scope.RATE]:
        raise ApiKeyInvalid(
            "A public key can only rate: its one scope is 'rate'. Use a secret key from a "
            "server for anything else.",
            field="scopes",
        )
    # Stored in the order of ApiKey.Scope, so that equal sets look equal.
    return [scope for scope in ApiKey.Scope.values if scope in chosen]


@dataclass(frozen=True)
class ApiKeySpec:
    """A key's kind, name, origins and scopes once checked and normalised."""

    kind: str
    name: str
    allowed_origins: list[str]
    scopes: list[str]


def api_key_check(
    *,
    kind: str,
    name: str,
    allowed_origins: Iterable[str] = (),
    scopes: Iterable[str] | None = None,
) -> ApiKeySpec:
    """The rules of a new key. Secret keys default to the scopes an app needs (chat, log,
    read, rate) and take no origins; public keys rate only, from at least one origin
    (scheme://host[:port], no path or query). Raises ApiKeyInvalid."""
    if kind not in ApiKey.Kind.values:
        raise ApiKeyInvalid(
            f"The kind must be one of {', '.join(ApiKey.Kind.values)}.", field="kind"
        )
    name = name.strip()
    if not name:
        raise ApiKeyInvalid("Give the key a name: which app or site uses it.", field="name")
    if len(name) > NAME_MAX_LENGTH:
        raise ApiKeyInvalid(f"Names are at most {NAME_MAX_LENGTH} characters.", field="name")
    return ApiKeySpec(
        kind=kind,
        name=name,
        scopes=_checked_scopes(kind=kind, scopes=scopes),
        allowed_origins=_checked_origins(kind=kind, allowed_origins=allowed_origins),
    )


def api_key_create(
    *,
    project: Project,
    kind: str,
    name: str,
    allowed_origins: Iterable[str] = (),
    scopes: Iterable[str] | None = None,
) -> CreatedApiKey:
    """A new key under the rules of `api_key_check`, its raw value returned once. Raises
    ApiKeyInvalid."""
    spec = api_key_check(kind=kind, name=name, allowed_origins=allowed_origins, scopes=scopes)
    raw_key = ApiKey.generate_raw_key(spec.kind)
    api_key = ApiKey.objects.create(
        project=project,
        kind=spec.kind,
        name=spec.name,
        display_prefix=raw_key[:12],
        key_hash=ApiKey.hash_key(raw_key),
        allowed_origins=spec.allowed_origins,
        scopes=spec.scopes,
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
