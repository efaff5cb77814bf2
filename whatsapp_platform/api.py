"""REST API of tenancy: what an API key's organization is and which channels it has."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from whatsapp_platform.selectors import channel_list


class OrganizationDetailApi(APIView):
    class ChannelSerializer(serializers.Serializer):  # type: ignore[type-arg]
        id = serializers.IntegerField()
        name = serializers.CharField()
        provider = serializers.CharField()
        address = serializers.CharField()
        messages_per_second = serializers.IntegerField()
        is_active = serializers.BooleanField()

    class OutputSerializer(serializers.Serializer):  # type: ignore[type-arg]
        id = serializers.IntegerField()
        name = serializers.CharField()
        channels = serializers.ListField(child=serializers.DictField())

    class OrganizationErrorOutput(serializers.Serializer):  # type: ignore[type-arg]
        detail = serializers.CharField()

    @extend_schema(responses={200: OutputSerializer, 401: OrganizationErrorOutput})
    def get(self, request: Request) -> Response:
        organization = request.user.organization  # type: ignore[union-attr]
        channels = self.ChannelSerializer(channel_list(organization=organization), many=True)
        return Response(
            {"id": organization.id, "name": organization.name, "channels": channels.data}
        )


@extend_schema(exclude=True)
class ApiNotFound(APIView):
    """Any other path under /api/ (e.g. an id that is not a number), whatever the method: a
    JSON 404 in the API's error shape, not an HTML page or a CSRF refusal."""

    authentication_classes = ()
    permission_classes = (AllowAny,)

    def http_method_not_allowed(  # type: ignore[override]
        self, request: Request, *args: Any, **kwargs: Any
    ) -> Response:
        return Response({"code": "not_found", "detail": "No such endpoint.", "errors": {}}, 404)
