from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import path
from django.views.generic import RedirectView

from gateway.api import api
from gateway.ops import health, metrics
from gateway.pages import views

admin.autodiscover()  # INSTALLED_APPS has SimpleAdminConfig: only a process that serves URLs loads the admin

handler500 = "gateway.http.errors.server_error"  # a database outage answers 503, not 500

urlpatterns = [
    path("", views.home, name="home"),
    path("upload", views.upload, name="upload"),
    path("jobs/", views.job_list, name="job-list"),
    path("jobs/<uuid:job_id>/", views.job_status, name="job-status"),
    # With API_KEYS_REQUIRED, the pages are for signed-in users (gateway.pages.views.sign_in_first).
    path(
        "accounts/login/",
        auth_views.LoginView.as_view(redirect_authenticated_user=True, extra_context={"ui": "lite"}),
        name="login",
    ),
    path("admin/", admin.site.urls),
    path("api/v1/", api.urls),
    path("api/docs", RedirectView.as_view(url="/api/v1/docs", permanent=False), name="api-docs"),
    path("health/live", health.live, name="health-live"),
    path("health/ready", health.ready, name="health-ready"),
    path("metrics", metrics.metrics, name="metrics"),
]
