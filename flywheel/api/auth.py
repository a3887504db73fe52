"""API keys as Bearer tokens. Every endpoint names the one scope it needs
(`SecretKeyAuth(scope="chat")`); a key without it gets 403 `missing_scope`. Secret keys
(fw_sk_) are used from servers; public keys (fw_pk_) only rate, from their project's allowed
origins."""

from typing import cast

from django.http import HttpRequest
from ninja.security import HttpBearer

from flywheel.api.errors import ApiError
from flywheel.models import ApiKey
from flywheel.services.api_keys import api_key_record_use, normalise_origin


def api_key_from_token(token: str) -> ApiKey:
    api_key = (
        ApiKey.objects.select_related("project").filter(key_hash=ApiKey.hash_key(token)).first()
    )
    if api_key is None:
        raise ApiError(401, "Unknown API key.", code="invalid_api_key")
    if not api_key.is_active:
        raise ApiError(401, "This API key has been revoked.", code="revoked_api_key")
    return api_key


def scope_require(api_key: ApiKey, scope: str, *or_scopes: str) -> None:
    """The key must hold `scope` or one of `or_scopes`."""
    accepted = (scope, *or_scopes)
    if not any(api_key.has_scope(each) for each in accepted):
        granted = ", ".join(api_key.scopes) or "none"
        needed = " or ".join(f"'{each}'" for each in accepted)
        raise ApiError(
            403,
            f"This API key lacks the {needed} scope this endpoint needs (it has: {granted}); "
            f"use a key created with the {needed} scope.",
            code="missing_scope",
        )


class ApiKeyRequest(HttpRequest):
    """The request an endpoint behind `SecretKeyAuth` or `RatingKeyAuth` receives: the auth class
    has set `api_key`. Only for typing: ninja passes the plain HttpRequest, and it recognises the
    request parameter by its name, `request`, whatever its annotation."""

    api_key: ApiKey


class SecretKeyAuth(HttpBearer):
    """Accepts a project's secret keys that carry `scope` (or one of `or_scopes`, for an
    endpoint that keys of either kind of use need); a public key is refused with 403."""

    def __init__(self, *, scope: str, or_scopes: tuple[str, ...] = ()):
        for each in (scope, *or_scopes):
            if each not in ApiKey.Scope.values:
                raise ValueError(f"unknown scope {each!r}")
        super().__init__()
        self.scope = scope
        self.or_scopes = or_scopes

    def authenticate(self, request: HttpRequest, token: str) -> ApiKey:
        api_key = api_key_from_token(token)
        if api_key.kind != ApiKey.Kind.SECRET:
            raise ApiError(
                403,
                "Public keys may only rate interactions; use a secret key on the server side.",
                code="public_key_not_allowed",
            )
        scope_require(api_key, self.scope, *self.or_scopes)
        api_key_record_use(api_key=api_key)
        cast(ApiKeyRequest, request).api_key = api_key
        return api_key


class RatingKeyAuth(HttpBearer):
    """Keys with the `rate` scope: secret keys, and public keys used from one of their
    project's allowed origins."""

    def authenticate(self, request: HttpRequest, token: str) -> ApiKey:
        api_key = api_key_from_token(token)
        scope_require(api_key, ApiKey.Scope.RATE)
        if api_key.kind == ApiKey.Kind.PUBLIC:
            origin = normalise_origin(request.headers.get("Origin", ""))
            if not origin or origin not in api_key.allowed_origins:
                raise ApiError(
                    403,
                    "This public key may not be used from this origin; add the origin to the "
                    "key's allowed origins.",
                    code="origin_not_allowed",
                )
        api_key_record_use(api_key=api_key)
        cast(ApiKeyRequest, request).api_key = api_key
        return api_key
