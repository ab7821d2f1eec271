from django.contrib import admin
from django.urls import path
from django.views.generic import RedirectView

from gateway import health, metrics_endpoint, pages
from gateway.api import api

handler500 = "gateway.errors.server_error"  # a database outage answers 503, not 500

urlpatterns = [
    path("", pages.home, name="home"),
    path("upload", pages.upload, name="upload"),
    path("jobs/", pages.job_list, name="job-list"),
    path("jobs/<uuid:job_id>/", pages.job_status, name="job-status"),
    path("admin/", admin.site.urls),
    path("api/v1/", api.urls),
    path("api/docs", RedirectView.as_view(url="/api/v1/docs", permanent=False), name="api-docs"),
    path("health/live", health.live, name="health-live"),
    path("health/ready", health.ready, name="health-ready"),
    path("metrics", metrics_endpoint.metrics, name="metrics"),
]
