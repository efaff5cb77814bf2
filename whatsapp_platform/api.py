"""REST API of tenancy: what an API key's organization is and which channels it has."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
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

    @extend_schema(responses=OutputSerializer)
    def get(self, request: Request) -> Response:
        organization = request.user.organization  # type: ignore[union-attr]
        channels = self.ChannelSerializer(channel_list(organization=organization), many=True)
        return Response(
            {"id": organization.id, "name": organization.name, "channels": channels.data}
        )
