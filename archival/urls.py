from django.urls import path

from archival import api

urlpatterns = [
    path("trigger", api.ArchiveTriggerApi.as_view(), name="archival-trigger"),
    path("status", api.ArchiveStatusApi.as_view(), name="archival-status"),
    path("logs/<str:job>", api.ArchiveLogsApi.as_view(), name="archival-logs"),
    path("metrics", api.ArchiveMetricsApi.as_view(), name="archival-metrics"),
    path(
        "schedule/toggle/<str:job>",
        api.ArchiveScheduleToggleApi.as_view(),
        name="archival-schedule-toggle",
    ),
    path("erase-contact", api.ContactEraseApi.as_view(), name="archival-erase-contact"),
]
