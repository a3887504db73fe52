"""Fixed-window rate limits counted in Redis, shared by every web process."""

import logging
from dataclasses import dataclass
from functools import cache

import redis
from django.conf import settings
from django.http import HttpRequest

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RateLimitVerdict:
    allowed: bool
    retry_after_seconds: int = 0


@cache
def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)


def rate_limit_hit(*, bucket: str, limit: int, window_seconds: int) -> RateLimitVerdict:
    """Count one request in `bucket`. With Redis down the request is allowed: losing a
    rating would be worse than letting a burst through."""
    client = _client(settings.REDIS_URL)
    key = f"flywheel:ratelimit:{bucket}"
    try:
        count, ttl = client.pipeline().incr(key).ttl(key).execute()
        if ttl < 0:
            client.expire(key, window_seconds)
            ttl = window_seconds
    except redis.RedisError as error:
        logger.warning("Rate limit not enforced, Redis failed: %s", error)
        return RateLimitVerdict(allowed=True)
    if count > limit:
        return RateLimitVerdict(allowed=False, retry_after_seconds=max(int(ttl), 1))
    return RateLimitVerdict(allowed=True)


def client_ip(request: HttpRequest) -> str:
    if settings.FLYWHEEL_TRUST_X_FORWARDED_FOR:
        forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
        if forwarded:
            return forwarded.split(",")[0].strip()
    return request.META.get("REMOTE_ADDR", "")
