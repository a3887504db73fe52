"""The HTTP API: OpenAI-compatible chat at /v1, Flywheel's own resources at /api/v1,
OpenAPI documentation at /api/docs."""

from ninja import NinjaAPI

from feedback.api import ratings_router
from flywheel.api.chat import router as chat_router
from flywheel.api.documents import router as documents_router
from flywheel.api.errors import install_error_handlers
from flywheel.api.interactions import router as interactions_router
from retrain.api import jobs_router
from retrain.api import router as datasets_router

api = NinjaAPI(
    title="Flywheel API",
    version="1",
    description=(
        "Serve answers with RAG (OpenAI-compatible `/v1/chat/completions`), log interactions, "
        "manage the knowledge base. Authenticate with a project API key as a Bearer token."
    ),
    docs_url="/api/docs",
    openapi_url="/api/openapi.json",
    urls_namespace="api",
)
install_error_handlers(api)
api.add_router("/v1/", chat_router)
api.add_router("/api/v1/", documents_router)
api.add_router("/api/v1/", interactions_router)
api.add_router("/api/v1/", ratings_router)
api.add_router("/api/v1/", datasets_router)
api.add_router("/api/v1/", jobs_router)
