"""The rating widget's pages, at the site root. The widget itself is a static file:
/static/flywheel/widget.js."""

from django.urls import path

from feedback.views.widget_demo import widget_demo

urlpatterns = [
    path("widget/demo/", widget_demo, name="widget_demo"),
]
