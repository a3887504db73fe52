from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path, re_path
from django.views.generic import RedirectView

from config import views
from config.api import api, api_path_not_found, redoc
from config.metrics import metrics
from dashboard.urls import widget_urlpatterns

# A database error raised outside a view answers 503, not 500 (see config.middleware).
handler500 = "config.middleware.server_error"

urlpatterns = [
    # The dashboard is the front door; it sends a visitor who is not signed in to log in.
    path("", RedirectView.as_view(pattern_name="dashboard:home"), name="home"),
    path("healthz", views.healthz, name="healthz"),
    path("metrics", metrics, name="metrics"),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("dashboard/", include("dashboard.urls")),
    path("", include(widget_urlpatterns)),
    path("admin/", admin.site.urls),
    path("api/redoc", redoc, name="api-redoc"),
    path("", api.urls),
    # After every endpoint: what is left under the API's prefixes is a JSON 404.
    re_path(r"^(?:v1|api)(?:/.*)?$", api_path_not_found),
]
