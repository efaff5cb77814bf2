from django.urls import path

from webhooks import views

urlpatterns = [
    path("meta/", views.meta_webhook, name="webhook-meta"),
    path("twilio/inbound/", views.twilio_inbound, name="webhook-twilio-inbound"),
    path("twilio/status/", views.twilio_status, name="webhook-twilio-status"),
]
