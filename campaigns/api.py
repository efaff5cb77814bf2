"""REST API of campaigns, scoped to the API key's organization.

Approval is a person's decision: approve and reject answer only an approver or admin of the
campaign's organization (or a superuser), through a session or basic auth, never an API key.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping
from typing import IO, Any, ClassVar, TypeVar

from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, extend_schema, extend_schema_field
from rest_framework import exceptions, serializers, status
from rest_framework.authentication import BasicAuthentication, SessionAuthentication
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.parsers import BaseParser, MultiPartParser
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from campaigns import services
from campaigns.audience import (
    AudienceFileError,
    audience_import,
    audience_import_is_inline,
    audience_import_queue,
)
from campaigns.models import AudienceImport, Campaign
from campaigns.selectors import (
    audience_import_get,
    audience_import_list,
    campaign_get,
    campaign_list,
    campaign_preview,
)
from campaigns.stats import campaign_stats
from whatsapp_platform.authentication import ApiClient, ApiKeyAuthentication
from whatsapp_platform.roles import approvable_organization_ids

TAGS = ["campaigns"]
_View = TypeVar("_View", bound=Callable[..., Response])


class Refused(exceptions.APIException):
    """A request the platform understood and will not carry out: 400 with the reason."""

    status_code = status.HTTP_400_BAD_REQUEST
    default_code = "refused"


class CsvParser(BaseParser):
    """A `text/csv` body, handed on unread as the `file` field: the import reads it row by row."""

    media_type = "text/csv"

    def parse(
        self,
        stream: IO[Any] | None,
        media_type: str | None = None,
        parser_context: Mapping[str, Any] | None = None,
    ) -> Mapping[str, Any]:
        return {"file": stream if stream is not None else io.BytesIO(b"")}


class CampaignOutputSerializer(serializers.Serializer):  # type: ignore[type-arg]
    id = serializers.IntegerField()
    name = serializers.CharField()
    status = serializers.CharField()
    status_reason = serializers.CharField()
    channel_id = serializers.IntegerField()
    template_id = serializers.IntegerField()
    template_name = serializers.CharField(source="template.name")
    scheduled_for = serializers.DateTimeField(allow_null=True)
    submitted_at = serializers.DateTimeField(allow_null=True)
    approved_at = serializers.DateTimeField(allow_null=True)
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)
    failure_threshold = serializers.IntegerField()
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


class ErrorSerializer(serializers.Serializer):  # type: ignore[type-arg]
    detail = serializers.CharField()
    errors = serializers.DictField(  # type: ignore[assignment]
        child=serializers.JSONField(),
        required=False,
        help_text="With a request that is not valid: the messages of each field at fault.",
    )


ERRORS: dict[int | str, Any] = {
    400: ErrorSerializer,
    401: ErrorSerializer,
    403: ErrorSerializer,
    404: ErrorSerializer,
}


class CampaignApi(APIView):
    """The base of every campaign endpoint: errors as 4xx with a message, lookups by tenant."""

    def handle_exception(self, exc: Exception) -> Response:
        if isinstance(exc, exceptions.ValidationError):
            # Like every other refusal: a `detail` to show, and the fields at fault.
            errors = (
                exc.detail if isinstance(exc.detail, dict) else {"non_field_errors": exc.detail}
            )
            return Response(
                {"detail": "The request is not valid: see errors.", "errors": errors},
                status=status.HTTP_400_BAD_REQUEST,
            )
        if isinstance(exc, DjangoValidationError):
            exc = Refused("; ".join(exc.messages))
        elif isinstance(exc, AudienceFileError):
            exc = Refused(str(exc))
        return super().handle_exception(exc)

    def campaign(self, request: Request, campaign_id: int) -> Campaign:
        organization = request.user.organization  # type: ignore[union-attr]
        campaign = campaign_get(organization=organization, campaign_id=campaign_id)
        if campaign is None:
            raise exceptions.NotFound("No such campaign.")
        return campaign

    def answer(self, campaign: Campaign, code: int = status.HTTP_200_OK) -> Response:
        campaign = (
            Campaign.tenant.for_organization(campaign.organization)
            .select_related("template")
            .get(id=campaign.id)
        )
        return Response(CampaignOutputSerializer(campaign).data, status=code)


class CampaignListApi(CampaignApi):
    class CampaignCreateSerializer(serializers.Serializer):  # type: ignore[type-arg]
        name = serializers.CharField(max_length=200)
        template_id = serializers.IntegerField()
        scheduled_for = serializers.DateTimeField(required=False, allow_null=True)
        failure_threshold = serializers.IntegerField(required=False, min_value=1)

    class PageSerializer(serializers.Serializer):  # type: ignore[type-arg]
        count = serializers.IntegerField()
        next = serializers.URLField(allow_null=True)
        previous = serializers.URLField(allow_null=True)
        results = CampaignOutputSerializer(many=True)

    @extend_schema(
        tags=TAGS,
        summary="List the organization's campaigns, newest first",
        operation_id="campaigns_list",
        responses={200: PageSerializer, 401: ErrorSerializer},
    )
    def get(self, request: Request) -> Response:
        paginator = LimitOffsetPagination()
        paginator.default_limit = 100
        campaigns = campaign_list(
            organization=request.user.organization  # type: ignore[union-attr]
        ).select_related("template")
        page = paginator.paginate_queryset(campaigns, request, view=self)
        return paginator.get_paginated_response(CampaignOutputSerializer(page, many=True).data)

    @extend_schema(
        tags=TAGS,
        summary="Create a draft campaign sending one of the organization's templates",
        request=CampaignCreateSerializer,
        responses={201: CampaignOutputSerializer, **ERRORS},
    )
    def post(self, request: Request) -> Response:
        serializer = self.CampaignCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        campaign = services.campaign_create(
            organization=request.user.organization,  # type: ignore[union-attr]
            **serializer.validated_data,
        )
        return self.answer(campaign, status.HTTP_201_CREATED)


class CampaignDetailApi(CampaignApi):
    class CampaignUpdateSerializer(serializers.Serializer):  # type: ignore[type-arg]
        name = serializers.CharField(max_length=200, required=False)
        template_id = serializers.IntegerField(required=False)
        scheduled_for = serializers.DateTimeField(required=False, allow_null=True)
        failure_threshold = serializers.IntegerField(required=False, min_value=1)

    @extend_schema(
        tags=TAGS,
        summary="A campaign",
        responses={200: CampaignOutputSerializer, 401: ErrorSerializer, 404: ErrorSerializer},
    )
    def get(self, request: Request, campaign_id: int) -> Response:
        return self.answer(self.campaign(request, campaign_id))

    @extend_schema(
        tags=TAGS,
        summary="Change a campaign; a new template or schedule needs a new approval",
        description="A pending, approved or scheduled campaign whose template or schedule "
        "changes goes back to draft. Running and finished campaigns cannot be changed.",
        request=CampaignUpdateSerializer,
        responses={200: CampaignOutputSerializer, **ERRORS},
    )
    def patch(self, request: Request, campaign_id: int) -> Response:
        campaign = self.campaign(request, campaign_id)
        serializer = self.CampaignUpdateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        return self.answer(
            services.campaign_update(campaign_id=campaign.id, **serializer.validated_data)
        )


class AudienceReportSerializer(serializers.Serializer):  # type: ignore[type-arg]
    class ProblemSerializer(serializers.Serializer):  # type: ignore[type-arg]
        row = serializers.IntegerField(help_text="Line in the file; the header is line 1.")
        reason = serializers.ChoiceField(
            choices=[
                "invalid_number",
                "duplicate_in_file",
                "already_in_audience",
                "opted_out",
                "missing_variables",
            ]
        )
        detail = serializers.CharField()

    rows = serializers.IntegerField()
    imported = serializers.IntegerField()
    opted_out = serializers.IntegerField(help_text="Imported as skipped.")
    invalid_numbers = serializers.IntegerField()
    duplicates_in_file = serializers.IntegerField()
    already_in_audience = serializers.IntegerField()
    missing_variables = serializers.IntegerField()
    problems = ProblemSerializer(many=True)
    problems_truncated = serializers.BooleanField()
    ignored_columns = serializers.ListField(child=serializers.CharField())


class AudienceImportOutputSerializer(serializers.Serializer):  # type: ignore[type-arg]
    id = serializers.IntegerField()
    campaign_id = serializers.IntegerField()
    state = serializers.ChoiceField(
        choices=AudienceImport.State.choices,
        help_text="queued, then running, then succeeded (with the report) or failed (with the "
        "error).",
    )
    file_name = serializers.CharField()
    file_size = serializers.IntegerField(help_text="Bytes.")
    report = AudienceReportSerializer(
        allow_null=True, help_text="The import's report, once it succeeded."
    )
    error = serializers.CharField(help_text="Why it failed (nothing was imported); else empty.")
    created_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)
    url = serializers.SerializerMethodField()

    @extend_schema_field(OpenApiTypes.URI)
    def get_url(self, audience_import: AudienceImport) -> str:
        path = reverse(
            "api-campaign-audience-import",
            args=(audience_import.campaign_id, audience_import.id),
        )
        request = self.context.get("request")
        return request.build_absolute_uri(path) if request is not None else path


class CampaignAudienceImportApi(CampaignApi):
    parser_classes = (MultiPartParser, CsvParser)

    class UploadSerializer(serializers.Serializer):  # type: ignore[type-arg]
        file = serializers.FileField(help_text="The CSV file.")

    @extend_schema(
        tags=TAGS,
        summary="Import recipients from a CSV file",
        description="A phone column (phone, phone_number, wa_id, msisdn, mobile or number) and "
        "one column per template variable, named by its placeholder (1 for {{1}}, first_name "
        "for {{first_name}}); headers in any case; UTF-8 with or without a byte-order mark. "
        "Send it as a multipart field `file` or as a text/csv body. A file up to "
        "CAMPAIGN_AUDIENCE_INLINE_MAX_BYTES (1 MB by default) is imported at once and answered "
        "with a report of every row that was not imported as it stood (200); a larger one is "
        "queued and imported in the background (202 with the import, whose `url` shows its "
        "state and, once it succeeded, its report). A file that cannot be read imports nothing.",
        request={
            "multipart/form-data": UploadSerializer,
            "text/csv": OpenApiTypes.BINARY,
        },
        responses={
            200: AudienceReportSerializer,
            202: AudienceImportOutputSerializer,
            415: ErrorSerializer,
            **ERRORS,
        },
        examples=[
            OpenApiExample("CSV", value="phone,1\n+447911123461,A-1001\n", media_type="text/csv")
        ],
    )
    def post(self, request: Request, campaign_id: int) -> Response:
        campaign = self.campaign(request, campaign_id)
        limit = settings.CAMPAIGN_AUDIENCE_MAX_BYTES
        too_large = Refused(f"The file is larger than the limit of {limit // (1024 * 1024)} MB.")
        content_length = int(request.META.get("CONTENT_LENGTH") or 0)
        if content_length > limit:
            raise too_large
        file: IO[bytes] | None = request.data.get("file")
        if file is None or not hasattr(file, "read"):
            raise Refused("Send the CSV as a multipart field named file or as a text/csv body.")
        # A multipart file knows its size; a text/csv body is the whole request.
        size = getattr(file, "size", None)
        if audience_import_is_inline(size=size if isinstance(size, int) else content_length):
            report = audience_import(campaign_id=campaign.id, file=file)
            return Response(AudienceReportSerializer(report.as_dict()).data)
        file_name = getattr(file, "name", "")
        queued = audience_import_queue(
            campaign_id=campaign.id,
            file=file,
            file_name=file_name if isinstance(file_name, str) else "",
            api_key=getattr(request.user, "api_key", None),
        )
        data = AudienceImportOutputSerializer(queued, context={"request": request}).data
        return Response(data, status=status.HTTP_202_ACCEPTED, headers={"Location": data["url"]})


class CampaignAudienceImportListApi(CampaignApi):
    class AudienceImportPageSerializer(serializers.Serializer):  # type: ignore[type-arg]
        count = serializers.IntegerField()
        next = serializers.URLField(allow_null=True)
        previous = serializers.URLField(allow_null=True)
        results = AudienceImportOutputSerializer(many=True)

    @extend_schema(
        tags=TAGS,
        summary="The campaign's background audience imports, newest first",
        operation_id="campaigns_audience_imports_list",
        responses={200: AudienceImportPageSerializer, 401: ErrorSerializer, 404: ErrorSerializer},
    )
    def get(self, request: Request, campaign_id: int) -> Response:
        campaign = self.campaign(request, campaign_id)
        paginator = LimitOffsetPagination()
        paginator.default_limit = 100
        imports = audience_import_list(organization=campaign.organization, campaign_id=campaign.id)
        page = paginator.paginate_queryset(imports, request, view=self)
        return paginator.get_paginated_response(
            AudienceImportOutputSerializer(page, many=True, context={"request": request}).data
        )


class CampaignAudienceImportDetailApi(CampaignApi):
    @extend_schema(
        tags=TAGS,
        summary="A background audience import: its state, and its report once it succeeded",
        responses={
            200: AudienceImportOutputSerializer,
            401: ErrorSerializer,
            404: ErrorSerializer,
        },
    )
    def get(self, request: Request, campaign_id: int, import_id: int) -> Response:
        campaign = self.campaign(request, campaign_id)
        audience_import = audience_import_get(
            organization=campaign.organization, campaign_id=campaign.id, import_id=import_id
        )
        if audience_import is None:
            raise exceptions.NotFound("No such import.")
        return Response(
            AudienceImportOutputSerializer(audience_import, context={"request": request}).data
        )


class CampaignPreviewSerializer(serializers.Serializer):  # type: ignore[type-arg]
    recipients = serializers.IntegerField()
    opted_out = serializers.IntegerField()
    invalid_numbers = serializers.IntegerField()
    marketing_held = serializers.IntegerField()
    frequency_capped = serializers.IntegerField()
    eligible = serializers.IntegerField()
    new_conversations = serializers.IntegerField(
        help_text="Eligible recipients without an open customer window: each opens a new "
        "business-initiated conversation."
    )
    messaging_tier = serializers.IntegerField(allow_null=True, help_text="Null: unlimited.")
    tier_used = serializers.IntegerField(
        help_text="Business-initiated conversations the channel opened in the last 24 hours."
    )
    tier_remaining = serializers.IntegerField(allow_null=True)
    warnings = serializers.ListField(child=serializers.CharField())


class CampaignPreviewApi(CampaignApi):
    @extend_schema(
        tags=TAGS,
        summary="Who the campaign will reach, and how much of the messaging tier it takes",
        responses={200: CampaignPreviewSerializer, 401: ErrorSerializer, 404: ErrorSerializer},
    )
    def get(self, request: Request, campaign_id: int) -> Response:
        preview = campaign_preview(campaign=self.campaign(request, campaign_id))
        return Response(CampaignPreviewSerializer(preview.as_dict()).data)


class CampaignStatsSerializer(serializers.Serializer):  # type: ignore[type-arg]
    recipients = serializers.IntegerField()
    pending = serializers.IntegerField(help_text="Recipients not turned into a message yet.")
    messages = serializers.IntegerField()
    queued = serializers.IntegerField()
    sent = serializers.IntegerField(help_text="Accepted by the provider, delivered ones included.")
    delivered = serializers.IntegerField(help_text="Read ones included.")
    read = serializers.IntegerField()
    failed = serializers.IntegerField()
    replied = serializers.IntegerField()
    skipped = serializers.IntegerField()
    delivery_rate = serializers.FloatField(help_text="delivered / sent")
    read_rate = serializers.FloatField(help_text="read / sent")
    reply_rate = serializers.FloatField(help_text="replied / sent")
    failure_rate = serializers.FloatField(help_text="failed / (sent + failed)")
    progress = serializers.FloatField(help_text="Share of recipients sent, failed or skipped.")
    final = serializers.BooleanField(help_text="The figures kept when the campaign completed.")


class CampaignStatsApi(CampaignApi):
    @extend_schema(
        tags=TAGS,
        summary="The campaign's progress and delivery figures",
        responses={200: CampaignStatsSerializer, 401: ErrorSerializer, 404: ErrorSerializer},
    )
    def get(self, request: Request, campaign_id: int) -> Response:
        stats = campaign_stats(campaign=self.campaign(request, campaign_id))
        return Response(CampaignStatsSerializer(stats).data)


# --- Workflow actions -------------------------------------------------------------------------


class NoInputSerializer(serializers.Serializer):  # type: ignore[type-arg]
    pass


class ReasonSerializer(serializers.Serializer):  # type: ignore[type-arg]
    reason = serializers.CharField(required=False, allow_blank=True, default="", max_length=2000)


class CampaignActionApi(CampaignApi):
    """POST to move a campaign one step along its workflow; answers the campaign."""

    InputSerializer: ClassVar[type[serializers.Serializer]] = NoInputSerializer  # type: ignore[type-arg]

    def post(self, request: Request, campaign_id: int) -> Response:
        campaign = self.campaign(request, campaign_id)
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        return self.answer(self.act(request, campaign, serializer.validated_data))

    def act(self, request: Request, campaign: Campaign, data: dict[str, Any]) -> Campaign:
        raise NotImplementedError


def _action_schema(summary: str, request: Any = None) -> Callable[[_View], _View]:
    return extend_schema(
        tags=TAGS,
        summary=summary,
        request=request,
        responses={200: CampaignOutputSerializer, **ERRORS},
    )


class CampaignSubmitApi(CampaignActionApi):
    @_action_schema("Submit a draft or rejected campaign for approval")
    def post(self, request: Request, campaign_id: int) -> Response:
        return super().post(request, campaign_id)

    def act(self, request: Request, campaign: Campaign, data: dict[str, Any]) -> Campaign:
        return services.campaign_submit(campaign_id=campaign.id, user=None)


class CampaignScheduleApi(CampaignActionApi):
    class ScheduleSerializer(serializers.Serializer):  # type: ignore[type-arg]
        scheduled_for = serializers.DateTimeField()

    InputSerializer = ScheduleSerializer

    @_action_schema("Schedule an approved campaign for a future time", ScheduleSerializer)
    def post(self, request: Request, campaign_id: int) -> Response:
        return super().post(request, campaign_id)

    def act(self, request: Request, campaign: Campaign, data: dict[str, Any]) -> Campaign:
        return services.campaign_schedule(campaign_id=campaign.id, when=data["scheduled_for"])


class CampaignLaunchApi(CampaignActionApi):
    @_action_schema("Start sending an approved or scheduled campaign now")
    def post(self, request: Request, campaign_id: int) -> Response:
        return super().post(request, campaign_id)

    def act(self, request: Request, campaign: Campaign, data: dict[str, Any]) -> Campaign:
        return services.campaign_launch(campaign_id=campaign.id)


class CampaignPauseApi(CampaignActionApi):
    InputSerializer = ReasonSerializer

    @_action_schema("Pause a running or scheduled campaign", ReasonSerializer)
    def post(self, request: Request, campaign_id: int) -> Response:
        return super().post(request, campaign_id)

    def act(self, request: Request, campaign: Campaign, data: dict[str, Any]) -> Campaign:
        return services.campaign_pause(campaign_id=campaign.id, reason=data["reason"])


class CampaignResumeApi(CampaignActionApi):
    @_action_schema("Resume sending a paused campaign")
    def post(self, request: Request, campaign_id: int) -> Response:
        return super().post(request, campaign_id)

    def act(self, request: Request, campaign: Campaign, data: dict[str, Any]) -> Campaign:
        return services.campaign_resume(campaign_id=campaign.id)


class CampaignCancelApi(CampaignActionApi):
    InputSerializer = ReasonSerializer

    @_action_schema("Cancel a campaign for good", ReasonSerializer)
    def post(self, request: Request, campaign_id: int) -> Response:
        return super().post(request, campaign_id)

    def act(self, request: Request, campaign: Campaign, data: dict[str, Any]) -> Campaign:
        return services.campaign_cancel(campaign_id=campaign.id, reason=data["reason"])


APPROVAL_AUTH = (
    "Answers an approver or admin of the campaign's organization (or a superuser), through a "
    "session or basic auth, who did not submit the campaign; an API key gets 403."
)


class IsApprover(BasePermission):
    message = (
        "Approving and rejecting need an approver or admin of the campaign's organization, "
        "signed in or through basic auth; API keys cannot approve."
    )

    def has_permission(self, request: Request, view: APIView) -> bool:
        user = request.user
        if isinstance(user, ApiClient) or not (user.is_authenticated and user.is_staff):
            raise exceptions.PermissionDenied(self.message)
        if not user.has_perm(services.APPROVE_PERMISSION):
            raise exceptions.PermissionDenied(self.message)
        return True


class CampaignApprovalApi(CampaignActionApi):
    """People who approve: organization approvers and admins, and superusers."""

    authentication_classes = (ApiKeyAuthentication, SessionAuthentication, BasicAuthentication)
    permission_classes = (IsApprover,)

    def campaign(self, request: Request, campaign_id: int) -> Campaign:
        # Superusers decide on any organization's campaigns; approvers and admins on their own
        # organizations' only: another organization's campaign is not found.
        organization_ids = approvable_organization_ids(request.user)
        campaigns = (
            Campaign.objects.all()
            if organization_ids is None
            else Campaign.tenant.for_organizations(organization_ids)
        )
        campaign = campaigns.filter(id=campaign_id).first()
        if campaign is None:
            raise exceptions.NotFound("No such campaign.")
        return campaign


class CampaignApproveApi(CampaignApprovalApi):
    @extend_schema(
        tags=TAGS,
        summary="Approve a pending campaign (staff approvers only, not its submitter)",
        request=None,
        responses={200: CampaignOutputSerializer, **ERRORS},
        description=APPROVAL_AUTH,
    )
    def post(self, request: Request, campaign_id: int) -> Response:
        return super().post(request, campaign_id)

    def act(self, request: Request, campaign: Campaign, data: dict[str, Any]) -> Campaign:
        return services.campaign_approve(campaign_id=campaign.id, user=request.user)  # type: ignore[arg-type]


class CampaignRejectApi(CampaignApprovalApi):
    class RejectSerializer(serializers.Serializer):  # type: ignore[type-arg]
        reason = serializers.CharField(max_length=2000)

    InputSerializer = RejectSerializer

    @extend_schema(
        tags=TAGS,
        summary="Reject a pending campaign, saying why (staff approvers only)",
        request=RejectSerializer,
        responses={200: CampaignOutputSerializer, **ERRORS},
        description=APPROVAL_AUTH,
    )
    def post(self, request: Request, campaign_id: int) -> Response:
        return super().post(request, campaign_id)

    def act(self, request: Request, campaign: Campaign, data: dict[str, Any]) -> Campaign:
        return services.campaign_reject(
            campaign_id=campaign.id,
            user=request.user,  # type: ignore[arg-type]
            reason=data["reason"],
        )
