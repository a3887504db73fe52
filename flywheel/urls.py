from django.contrib import admin
from django.urls import path

from flywheel import views
from flywheel.api import api

urlpatterns = [
    path("", views.home, name="home"),
    path("healthz", views.healthz, name="healthz"),
    path("admin/", admin.site.urls),
    path("", api.urls),
]
