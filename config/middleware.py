"""A database that cannot be reached is an outage to wait out, not a bug: pages and API calls
answer 503 with Retry-After instead of 500. Django opens a connection per request (and checks a
kept one before reusing it), so the next request after PostgreSQL is back succeeds."""

import logging
import sys

from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse
from django.template import loader
from django.views import defaults

from flywheel.api.errors import DATABASE_RETRY_AFTER_SECONDS, database_unavailable_response

logger = logging.getLogger(__name__)

DATABASE_UNAVAILABLE_ERRORS = (OperationalError, InterfaceError)
# Machine clients get the API's JSON error; people get a page.
API_PATH_PREFIXES = ("/api/", "/v1/")


def database_unavailable_page(request: HttpRequest) -> HttpResponse:
    """The 503 answer for `request`. The page is rendered without the request: its context
    processors would load the signed-in user, from the database that is down."""
    if request.path.startswith(API_PATH_PREFIXES):
        return database_unavailable_response()
    body = loader.get_template("503.html").render(
        {"retry_after_seconds": DATABASE_RETRY_AFTER_SECONDS}
    )
    response = HttpResponse(body, status=503)
    response["Retry-After"] = str(DATABASE_RETRY_AFTER_SECONDS)
    return response


class DatabaseUnavailableMiddleware:
    """Turns a lost or refused database connection in a view into the 503 answer."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not isinstance(exception, DATABASE_UNAVAILABLE_ERRORS):
            return None
        logger.warning("Database unavailable in %s %s: %s", request.method, request.path, exception)
        return database_unavailable_page(request)


def server_error(request: HttpRequest) -> HttpResponse:
    """handler500: a database error raised outside a view (in a middleware that queries, such
    as the widget's CORS check) still answers 503 rather than 500."""
    exception = sys.exc_info()[1]
    if isinstance(exception, DATABASE_UNAVAILABLE_ERRORS):
        return database_unavailable_page(request)
    return defaults.server_error(request)
