"""The HTTP API: OpenAI-compatible chat, models and embeddings at /v1, Flywheel's own resources
at /api/v1, OpenAPI documentation at /api/docs (Swagger UI) and /api/redoc (ReDoc), both served
from django-ninja's own static files."""

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from ninja import NinjaAPI
from ninja.openapi.docs import Redoc

from feedback.api import ratings_router, reviews_router
from flywheel.api.chat import router as chat_router
from flywheel.api.documents import router as documents_router
from flywheel.api.embeddings import router as embeddings_router
from flywheel.api.errors import document_error_responses, error_response, install_error_handlers
from flywheel.api.interactions import router as interactions_router
from flywheel.api.models import router as models_router
from flywheel.api.otel import router as otel_router
from flywheel.api.parser import CheckedJsonParser
from retrain.api import jobs_router
from retrain.api import router as datasets_router
from retrain.api_experiments import router as experiments_router


class FlywheelApi(NinjaAPI):
    def get_openapi_schema(self, *, path_prefix=None, path_params=None):
        schema = super().get_openapi_schema(path_prefix=path_prefix, path_params=path_params)
        document_error_responses(schema)
        return schema


api = FlywheelApi(
    title="Flywheel API",
    version="1",
    description=(
        "Serve answers with RAG (OpenAI-compatible `/v1/chat/completions`), log interactions, "
        "manage the knowledge base. Authenticate with a project API key as a Bearer token."
    ),
    docs_url="/api/docs",
    openapi_url="/api/openapi.json",
    urls_namespace="api",
    parser=CheckedJsonParser(),
)
install_error_handlers(api)
api.add_router("/v1/", chat_router)
api.add_router("/v1/", models_router)
api.add_router("/v1/", embeddings_router)
api.add_router("/api/v1/", documents_router)
api.add_router("/api/v1/", interactions_router)
api.add_router("/api/v1/", otel_router)
api.add_router("/api/v1/", ratings_router)
api.add_router("/api/v1/", reviews_router)
api.add_router("/api/v1/", datasets_router)
api.add_router("/api/v1/", jobs_router)
api.add_router("/api/v1/", experiments_router)

_redoc = Redoc()


def redoc(request: HttpRequest) -> HttpResponse:
    response = _redoc.render_page(request, api)
    # ReDoc's sidebar always shows Redocly's logo from their CDN; the policy keeps the browser
    # from fetching it (the link beside it stays), so the page makes no request elsewhere.
    response["Content-Security-Policy"] = "img-src 'self' data:"
    return response


# Exempt: a client that POSTs to a wrong path must get the JSON 404, not a CSRF page.
@csrf_exempt
def api_path_not_found(request: HttpRequest) -> JsonResponse:
    """Any path under /v1/ or /api/ that no endpoint has: a JSON 404 in OpenAI's shape (an
    OpenAI client shows its message), never an HTML page."""
    return error_response(
        404,
        f"Invalid URL ({request.method} {request.path}): no such endpoint; /api/docs lists them.",
        code="unknown_url",
    )
