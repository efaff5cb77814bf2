from django.urls import path

from whatsapp_platform.monitoring import api, views

urlpatterns = [
    path("health/ready/", views.health_ready, name="health-ready"),
    path("health/sqs/", views.health_sqs, name="health-sqs"),
    path("health/workers/", views.health_workers, name="health-workers"),
    path("monitoring/metrics", views.metrics, name="monitoring-metrics"),
    path("monitoring/summary", views.summary, name="monitoring-summary"),
    path("monitoring/alerts", views.alerts, name="monitoring-alerts"),
    path("monitoring/dashboard", views.dashboard, name="monitoring-dashboard"),
    path("monitoring/dashboard/data", views.dashboard_json, name="monitoring-dashboard-data"),
    path(
        "monitoring/dead-letters/",
        api.DeadLetterListApi.as_view(),
        name="monitoring-dead-letters",
    ),
    path(
        "monitoring/dead-letters/redrive/",
        api.DeadLetterRedriveApi.as_view(),
        name="monitoring-dead-letters-redrive",
    ),
    path(
        "monitoring/dead-letters/purge/",
        api.DeadLetterPurgeApi.as_view(),
        name="monitoring-dead-letters-purge",
    ),
    path("api/messaging/queue/status", api.QueueStatusApi.as_view(), name="api-queue-status"),
    path("api/messaging/analytics", api.AnalyticsEventApi.as_view(), name="api-analytics"),
    path(
        "api/messaging/analytics/campaigns/<int:campaign_id>",
        api.CampaignFunnelApi.as_view(),
        name="api-campaign-funnel",
    ),
]
