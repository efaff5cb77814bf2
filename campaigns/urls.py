from django.urls import path

from campaigns import api

urlpatterns = [
    path("", api.CampaignListApi.as_view(), name="api-campaign-list"),
    path("<int:campaign_id>/", api.CampaignDetailApi.as_view(), name="api-campaign-detail"),
    path(
        "<int:campaign_id>/audience/",
        api.CampaignAudienceImportApi.as_view(),
        name="api-campaign-audience",
    ),
    path(
        "<int:campaign_id>/audience/imports/",
        api.CampaignAudienceImportListApi.as_view(),
        name="api-campaign-audience-imports",
    ),
    path(
        "<int:campaign_id>/audience/imports/<int:import_id>/",
        api.CampaignAudienceImportDetailApi.as_view(),
        name="api-campaign-audience-import",
    ),
    path(
        "<int:campaign_id>/preview/", api.CampaignPreviewApi.as_view(), name="api-campaign-preview"
    ),
    path("<int:campaign_id>/stats/", api.CampaignStatsApi.as_view(), name="api-campaign-stats"),
    path("<int:campaign_id>/submit/", api.CampaignSubmitApi.as_view(), name="api-campaign-submit"),
    path(
        "<int:campaign_id>/schedule/",
        api.CampaignScheduleApi.as_view(),
        name="api-campaign-schedule",
    ),
    path("<int:campaign_id>/launch/", api.CampaignLaunchApi.as_view(), name="api-campaign-launch"),
    path("<int:campaign_id>/pause/", api.CampaignPauseApi.as_view(), name="api-campaign-pause"),
    path("<int:campaign_id>/resume/", api.CampaignResumeApi.as_view(), name="api-campaign-resume"),
    path("<int:campaign_id>/cancel/", api.CampaignCancelApi.as_view(), name="api-campaign-cancel"),
    path(
        "<int:campaign_id>/approve/", api.CampaignApproveApi.as_view(), name="api-campaign-approve"
    ),
    path("<int:campaign_id>/reject/", api.CampaignRejectApi.as_view(), name="api-campaign-reject"),
]
