"""API keys as Bearer tokens. Secret keys (fw_sk_) chat, log and read within their project;
public keys (fw_pk_) may only rate, from their project's allowed origins."""

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


class ApiKeyRequest(HttpRequest):
    """The request an endpoint behind `SecretKeyAuth` or `RatingKeyAuth` receives: the auth class
    has set `api_key`. Only for typing: ninja passes the plain HttpRequest, and it recognises the
    request parameter by its name, `request`, whatever its annotation."""

    api_key: ApiKey


class SecretKeyAuth(HttpBearer):
    """Accepts a project's secret keys; a public key is refused with 403."""

    def authenticate(self, request: HttpRequest, token: str) -> ApiKey:
        api_key = api_key_from_token(token)
        if api_key.kind != ApiKey.Kind.SECRET:
            raise ApiError(
                403,
                "Public keys may only rate interactions; use a secret key on the server side.",
                code="public_key_not_allowed",
            )
        api_key_record_use(api_key=api_key)
        cast(ApiKeyRequest, request).api_key = api_key
        return api_key


class RatingKeyAuth(HttpBearer):
    """Secret keys, and public keys used from one of their project's allowed origins."""

    def authenticate(self, request: HttpRequest, token: str) -> ApiKey:
        api_key = api_key_from_token(token)
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
