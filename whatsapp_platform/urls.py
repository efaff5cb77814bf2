from django.contrib import admin
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from whatsapp_platform import views
from whatsapp_platform.api import ApiNotFound, OrganizationDetailApi

admin.site.site_header = "WhatsApp platform"
admin.site.site_title = "WhatsApp platform"

urlpatterns = [
    # First: the busiest path, resolved before any pattern it would have to be tried against.
    path("webhooks/", include("webhooks.urls")),
    path("admin/", admin.site.urls),
    path("health/", views.health, name="health"),
    path("", include("whatsapp_platform.monitoring.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("api/", include("conversations.urls")),
    path("api/v1/organization", OrganizationDetailApi.as_view(), name="api-organization"),
    path("api/campaigns/", include("campaigns.urls")),
    path("api/admin/archival/", include("archival.urls")),
    # Last: whatever no API route matched (e.g. an id that is not a number).
    re_path(r"^api/", ApiNotFound.as_view(), name="api-not-found"),
]
