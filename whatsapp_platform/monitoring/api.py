"""REST endpoints: queue status and analytics for API clients (their organization only), and the
dead letters for superusers."""

from __future__ import annotations

import uuid
from typing import Any

from django.conf import settings
from django.db.models import Count, Q
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.authentication import BasicAuthentication, SessionAuthentication
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from whatsapp_platform.authentication import ApiClient
from whatsapp_platform.models import Organization
from whatsapp_platform.monitoring import dead_letters
from whatsapp_platform.monitoring.analytics import (
    EventInput,
    analytics_events_enqueue,
    campaign_funnel,
)
from whatsapp_platform.roles import is_platform_operator


def _organization(request: Request) -> Organization:
    client = request.user
    assert isinstance(client, ApiClient)
    return client.organization


def _error(code: str, detail: str, http_status: int, errors: Any = None) -> Response:
    return Response({"code": code, "detail": detail, "errors": errors or {}}, status=http_status)


class MonitoringErrorOutput(serializers.Serializer):  # type: ignore[type-arg]
    code = serializers.CharField(required=False)
    detail = serializers.CharField()
    errors = serializers.JSONField(required=False)  # type: ignore[assignment]


_UNAUTHORIZED = {401: MonitoringErrorOutput}
_STAFF_ONLY = {401: MonitoringErrorOutput, 403: MonitoringErrorOutput}
_SQS_UNAVAILABLE = {503: MonitoringErrorOutput}


class QueueStatusApi(APIView):
    """The organization's own work waiting in the platform's queues."""

    @extend_schema(
        summary="Queue status of the organization's messages and webhooks",
        responses={200: OpenApiTypes.OBJECT, **_UNAUTHORIZED},
    )
    def get(self, request: Request) -> Response:
        from conversations.models import Message
        from webhooks.models import WebhookEvent

        organization = _organization(request)
        now = timezone.now()
        Status = Message.Status
        outgoing = (
            Message.tenant.for_organization(organization)
            .filter(direction=Message.Direction.OUTBOUND)
            .aggregate(
                queued=Count(
                    "id",
                    filter=Q(status=Status.QUEUED)
                    & (Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now)),
                ),
                scheduled=Count("id", filter=Q(status=Status.QUEUED, next_attempt_at__gt=now)),
                sending=Count("id", filter=Q(status=Status.SENDING)),
            )
        )
        incoming = WebhookEvent.tenant.for_organization(organization).aggregate(
            waiting=Count(
                "id",
                filter=Q(state__in=(WebhookEvent.State.RECEIVED, WebhookEvent.State.QUEUED)),
            ),
            failed=Count("id", filter=Q(state=WebhookEvent.State.FAILED)),
        )
        return Response(
            {"generated_at": now.isoformat(), "outgoing": outgoing, "incoming": incoming}
        )


class AnalyticsEventApi(APIView):
    class EventSerializer(serializers.Serializer):  # type: ignore[type-arg]
        event = serializers.RegexField(r"^[A-Za-z0-9_.:-]{1,100}$")
        event_id = serializers.RegexField(r"^[A-Za-z0-9_.:-]{1,100}$", required=False)
        campaign_id = serializers.IntegerField(required=False, min_value=1)
        message_id = serializers.IntegerField(required=False, min_value=1)
        occurred_at = serializers.DateTimeField(required=False)
        properties = serializers.DictField(required=False, default=dict)

    class InputSerializer(serializers.Serializer):  # type: ignore[type-arg]
        events = serializers.ListField(
            child=serializers.DictField(), min_length=1, max_length=settings.ANALYTICS_MAX_EVENTS
        )

    @extend_schema(
        summary='Record client events (one object, or {"events": [...]}) for the analytics',
        request=EventSerializer,
        responses={
            202: OpenApiTypes.OBJECT,
            400: MonitoringErrorOutput,
            404: MonitoringErrorOutput,
            503: MonitoringErrorOutput,
            **_UNAUTHORIZED,
        },
    )
    def post(self, request: Request) -> Response:
        from campaigns.models import Campaign
        from conversations.models import Message

        organization = _organization(request)
        data = request.data
        batch = isinstance(data, dict) and "events" in data
        outer = self.InputSerializer(data=data if batch else {"events": [data]})
        if not outer.is_valid():
            return _error("invalid", "The request body is not valid.", 400, outer.errors)
        events: list[EventInput] = []
        for index, raw in enumerate(outer.validated_data["events"]):
            item = self.EventSerializer(data=raw)
            if not item.is_valid():
                return _error("invalid", f"Event {index} is not valid.", 400, {index: item.errors})
            value = item.validated_data
            events.append(
                EventInput(
                    event_id=value.get("event_id") or uuid.uuid4().hex,
                    name=value["event"],
                    campaign_id=value.get("campaign_id"),
                    message_id=value.get("message_id"),
                    properties=value.get("properties") or {},
                    occurred_at=(value.get("occurred_at") or timezone.now()).isoformat(),
                )
            )
        campaigns = {e["campaign_id"] for e in events if e["campaign_id"]}
        if campaigns - set(
            Campaign.tenant.for_organization(organization)
            .filter(id__in=campaigns)
            .values_list("id", flat=True)
        ):
            return _error("not_found", "No such campaign.", 404)
        messages = {e["message_id"] for e in events if e["message_id"]}
        if messages - set(
            Message.tenant.for_organization(organization)
            .filter(id__in=messages)
            .values_list("id", flat=True)
        ):
            return _error("not_found", "No such message.", 404)
        try:
            analytics_events_enqueue(organization_id=organization.pk, events=events)
        except Exception:
            return _error(
                "unavailable", "Events cannot be accepted right now; send them again.", 503
            )
        return Response(
            {"accepted": len(events), "event_ids": [e["event_id"] for e in events]},
            status=status.HTTP_202_ACCEPTED,
        )


class CampaignFunnelApi(APIView):
    @extend_schema(
        summary="A campaign's funnel: sent, delivered, read, replied, client events",
        responses={200: OpenApiTypes.OBJECT, 404: MonitoringErrorOutput, **_UNAUTHORIZED},
    )
    def get(self, request: Request, campaign_id: int) -> Response:
        from campaigns.models import Campaign

        campaign = (
            Campaign.tenant.for_organization(_organization(request)).filter(id=campaign_id).first()
        )
        if campaign is None:
            return _error("not_found", "No such campaign.", 404)
        return Response(campaign_funnel(campaign=campaign))


# --- Dead letters (superusers) --------------------------------------------------------------


class IsPlatformOperator(BasePermission):
    # SQS dead-letter queues hold every organization's tasks, and a redrive or purge acts on
    # all of them: no member of one organization may read or change them.
    message = "Dead letters span every organization: superusers only."

    def has_permission(self, request: Request, view: APIView) -> bool:
        return is_platform_operator(request.user)


class _StaffApi(APIView):
    authentication_classes = (SessionAuthentication, BasicAuthentication)
    permission_classes = (IsPlatformOperator,)


class DeadLetterListApi(_StaffApi):
    @extend_schema(
        summary="Dead letters of every queue, or of `?queue=` (superusers)",
        responses={
            200: OpenApiTypes.OBJECT,
            400: MonitoringErrorOutput,
            **_STAFF_ONLY,
            **_SQS_UNAVAILABLE,
        },
    )
    def get(self, request: Request) -> Response:
        try:
            letters = dead_letters.dead_letters_list(queue=request.query_params.get("queue"))
        except dead_letters.UnknownQueue as exc:
            return _error("unknown_queue", str(exc), 400)
        except Exception as exc:
            return _error("unavailable", f"SQS cannot be read: {type(exc).__name__}", 503)
        return Response({"dead_letters": [letter.as_dict() for letter in letters]})


class _DeadLetterActionApi(_StaffApi):
    class InputSerializer(serializers.Serializer):  # type: ignore[type-arg]
        queue = serializers.ChoiceField(choices=list(settings.WORK_QUEUES), required=False)
        ids = serializers.ListField(
            child=serializers.CharField(max_length=100), required=False, min_length=1
        )
        all = serializers.BooleanField(required=False, default=False)

        def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
            if bool(attrs.get("ids")) == bool(attrs.get("all")):
                raise serializers.ValidationError("Give either `ids` or `all: true`.")
            return attrs

    def act(self, queue: str | None, ids: list[str] | None) -> int:
        raise NotImplementedError

    def post(self, request: Request) -> Response:
        serializer = self.InputSerializer(data=request.data)
        if not serializer.is_valid():
            return _error("invalid", "The request body is not valid.", 400, serializer.errors)
        value = serializer.validated_data
        try:
            count = self.act(value.get("queue"), None if value.get("all") else value["ids"])
        except Exception as exc:
            return _error("unavailable", f"SQS cannot be read: {type(exc).__name__}", 503)
        return Response({"count": count})


class DeadLetterRedriveApi(_DeadLetterActionApi):
    @extend_schema(
        summary="Send chosen (`ids`) or all dead letters back to their queue (superusers)",
        request=_DeadLetterActionApi.InputSerializer,
        responses={
            200: OpenApiTypes.OBJECT,
            400: MonitoringErrorOutput,
            **_STAFF_ONLY,
            **_SQS_UNAVAILABLE,
        },
    )
    def post(self, request: Request) -> Response:
        return super().post(request)

    def act(self, queue: str | None, ids: list[str] | None) -> int:
        return dead_letters.dead_letters_redrive(queue=queue, ids=ids)


class DeadLetterPurgeApi(_DeadLetterActionApi):
    @extend_schema(
        summary="Delete chosen (`ids`) or all dead letters (superusers)",
        request=_DeadLetterActionApi.InputSerializer,
        responses={
            200: OpenApiTypes.OBJECT,
            400: MonitoringErrorOutput,
            **_STAFF_ONLY,
            **_SQS_UNAVAILABLE,
        },
    )
    def post(self, request: Request) -> Response:
        return super().post(request)

    def act(self, queue: str | None, ids: list[str] | None) -> int:
        return dead_letters.dead_letters_purge(queue=queue, ids=ids)
