"""Request bodies are parsed and checked in one place, for every endpoint: a value that
PostgreSQL would refuse anywhere in the body (a NUL character, a lone surrogate, NaN, an
infinity, a number beyond float64) is refused here, by its path, before any schema or service
sees it."""

from django.http import HttpRequest
from ninja.parser import Parser

from flywheel.validation import json_loads_checked


class CheckedJsonParser(Parser):
    def parse_body(self, request: HttpRequest):
        # ninja turns whatever this raises into "Cannot parse request body" with this error as
        # the cause; flywheel.api.errors reads the InvalidValue back from there.
        return json_loads_checked(request.body)
