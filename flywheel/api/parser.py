"""Request bodies are parsed and checked in one place, for every endpoint: a value that
PostgreSQL would refuse anywhere in the body (a NUL character, a lone surrogate, NaN, an
infinity, a number beyond float64) is refused here, by its path, before any schema or service
sees it.

An endpoint whose bodies are large and whose schema can vouch for every value (the
interaction log's batches) may take a faster way first: `body_validated_by`."""

from collections.abc import Callable
from typing import Any

from django.http import HttpRequest
from ninja.params.models import Body, BodyModel
from ninja.parser import Parser
from pydantic import BaseModel

from flywheel.validation import json_loads_checked


class CheckedJsonParser(Parser):
    def parse_body(self, request: HttpRequest):
        # No body is no fields: an optional body (a promotion's or a stop's reason) takes its
        # defaults, and a required one names what is missing, rather than "not valid JSON".
        if not request.body.strip():
            return {}
        # ninja turns whatever this raises into "Cannot parse request body" with this error as
        # the cause; flywheel.api.errors reads the InvalidValue back from there.
        return json_loads_checked(request.body)


def body_validated_by(validate: Callable[[bytes], BaseModel | None]) -> Any:
    """A JSON body parameter, documented by its annotated model like any other, that
    `validate` reads straight from the request's bytes; where `validate` returns None, the
    body is parsed and checked as every body is, and the annotated model words the errors.

    `validate` must return a value only where that ordinary way would give the same one:
    it is how a batch of a thousand interactions skips walking its parsed JSON in Python.

        def view(request, payload: Annotated[BatchIn, body_validated_by(batch_from_json)]):
    """

    class ValidatedFromJsonModel(BodyModel):
        @classmethod
        def resolve(cls, request, api, path_params):
            name = cls.__read_from_single_attr__
            value = validate(request.body) if name and request.body else None
            if value is None:
                return super().resolve(request, api, path_params)
            values: dict[str, Any] = {name: value}
            return cls.model_construct(**values)

    class ValidatedFromJson(Body):  # type: ignore[misc]  # as ninja's own Param classes
        # ninja builds a parameter source's model from its class's `_model`, and documents
        # the source by `_param_source()`: a request body like any Body.
        _model = ValidatedFromJsonModel

        @classmethod
        def _param_source(cls) -> str:
            return "body"

    return ValidatedFromJson(...)
