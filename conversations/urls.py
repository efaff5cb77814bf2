from django.urls import path

from conversations import api

urlpatterns = [
    path("messaging/send/", api.MessageSendApi.as_view(), name="api-messaging-send"),
    path("messaging/send/bulk/", api.MessageSendBulkApi.as_view(), name="api-messaging-send-bulk"),
    path("messages/", api.MessageListApi.as_view(), name="api-message-list"),
    path("messages/<int:message_id>/", api.MessageDetailApi.as_view(), name="api-message-detail"),
]
