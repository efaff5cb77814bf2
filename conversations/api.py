"""The messaging REST API: send messages, one or in bulk, and read them back with their history.

Serializers check the shape of a request; `conversations.outbound` decides whether a message may
be sent. Every refusal answers a 4xx with `{"code", "detail", "errors"}`.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ObjectDoesNotExist
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiResponse,
    extend_schema,
    extend_schema_field,
)
from rest_framework import generics, serializers, status
from rest_framework.exceptions import NotFound, ParseError, UnsupportedMediaType
from rest_framework.pagination import CursorPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from conversations.models import Message
from conversations.outbound import (
    BULK_MAX_MESSAGES,
    PRIORITIES,
    PRIORITY_NAMES,
    SendRefused,
    SendRequest,
    outbound_send,
    outbound_send_bulk,
)
from conversations.selectors import message_get, message_list, message_status_history
from whatsapp_platform.authentication import ApiClient
from whatsapp_platform.lib.phone import InvalidPhoneNumber, normalize_msisdn
from whatsapp_platform.models import Organization

DIRECTIONS = {"inbound": Message.Direction.INBOUND, "outbound": Message.Direction.OUTBOUND}
DIRECTION_NAMES: dict[str, str] = {value: name for name, value in DIRECTIONS.items()}


def _organization(request: Request) -> Organization:
    client = request.user
    assert isinstance(client, ApiClient)
    return client.organization


def _error(
    code: str, detail: str, http_status: int, errors: dict[str, Any] | None = None
) -> Response:
    return Response({"code": code, "detail": detail, "errors": errors or {}}, status=http_status)


def _refused(refused: SendRefused) -> Response:
    return _error(
        refused.code,
        refused.message,
        refused.status,
        {refused.field or "non_field_errors": [refused.message]},
    )


def _invalid(errors: Any) -> Response:
    return _error("invalid", "The request is not valid: see errors.", 400, errors)


# --- Input --------------------------------------------------------------------------------


@extend_schema_field(
    {
        "oneOf": [
            {"type": "array", "items": {"type": "string"}, "description": "{{1}}..{{n}} in order"},
            {
                "type": "object",
                "additionalProperties": {"type": "string"},
                "description": 'named placeholders, e.g. {"first_name": "Dana"}',
            },
        ]
    }
)
class TemplateParametersField(serializers.Field):  # type: ignore[type-arg]
    """Positional parameters as a list, or named ones as an object; every value a string."""

    default_error_messages = {
        "invalid": "Give a list of values, or an object of placeholder name to value.",
        "value": "Each parameter must be a non-empty string or number.",
    }

    def _value(self, value: Any) -> str:
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            self.fail("value")
        text = str(value).strip()
        if not text or len(text) > 1024:
            self.fail("value")
        return text

    def to_internal_value(self, data: Any) -> list[str] | dict[str, str]:
        if isinstance(data, list):
            return [self._value(value) for value in data]
        if isinstance(data, dict):
            return {str(name): self._value(value) for name, value in data.items()}
        self.fail("invalid")
        raise AssertionError  # unreachable: fail() raises

    def to_representation(self, value: Any) -> Any:
        return value


class TextInput(serializers.Serializer):  # type: ignore[type-arg]
    body = serializers.CharField(max_length=4096)
    preview_url = serializers.BooleanField(default=False)


class TemplateHeaderInput(serializers.Serializer):  # type: ignore[type-arg]
    type = serializers.ChoiceField(choices=["text", "image", "video", "document"])
    parameters = TemplateParametersField(required=False, help_text="For a text header.")
    link = serializers.URLField(required=False, max_length=2000)
    media_id = serializers.CharField(required=False, max_length=200)
    filename = serializers.CharField(required=False, max_length=240)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if attrs["type"] != "text" and bool(attrs.get("link")) == bool(attrs.get("media_id")):
            raise serializers.ValidationError("A media header takes a link or a media_id.")
        return attrs


class TemplateButtonInput(serializers.Serializer):  # type: ignore[type-arg]
    index = serializers.IntegerField(min_value=0, max_value=9)
    sub_type = serializers.ChoiceField(choices=["quick_reply", "url", "copy_code"])
    parameter = serializers.CharField(max_length=2000)


class TemplateInput(serializers.Serializer):  # type: ignore[type-arg]
    name = serializers.CharField(max_length=512)
    language = serializers.CharField(
        max_length=15,
        required=False,
        help_text="The template's language code, e.g. en_US; optional when it has only one.",
    )
    parameters = TemplateParametersField(
        required=False, help_text="The body's parameters: a list, or an object for named ones."
    )
    header = TemplateHeaderInput(required=False)
    buttons = TemplateButtonInput(many=True, required=False)


class MediaInput(serializers.Serializer):  # type: ignore[type-arg]
    type = serializers.ChoiceField(choices=["image", "document", "audio", "video", "sticker"])
    link = serializers.URLField(required=False, max_length=2000)
    media_id = serializers.CharField(required=False, max_length=200)
    caption = serializers.CharField(required=False, max_length=1024)
    filename = serializers.CharField(required=False, max_length=240)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if bool(attrs.get("link")) == bool(attrs.get("media_id")):
            raise serializers.ValidationError("Give the media's link or its media_id, not both.")
        if attrs.get("caption") and attrs["type"] in {"audio", "sticker"}:
            raise serializers.ValidationError({"caption": f"A {attrs['type']} has no caption."})
        if attrs.get("filename") and attrs["type"] != "document":
            raise serializers.ValidationError({"filename": "Only a document has a filename."})
        return attrs


def _interactive_problems(interactive: dict[str, Any]) -> list[str]:
    """Meta's limits on interactive messages (reply buttons, lists, call-to-action URLs)."""
    problems: list[str] = []
    kind = interactive.get("type")
    if kind not in {"button", "list", "cta_url"}:
        return ["interactive.type must be 'button', 'list' or 'cta_url'."]
    body = interactive.get("body")
    if not isinstance(body, dict) or not str(body.get("text") or "").strip():
        problems.append("interactive.body.text is required.")
    elif len(str(body["text"])) > 1024:
        problems.append("interactive.body.text has at most 1,024 characters.")
    for part in ("header", "footer"):
        value = interactive.get(part)
        if isinstance(value, dict) and len(str(value.get("text") or "")) > 60:
            problems.append(f"interactive.{part}.text has at most 60 characters.")
    action = interactive.get("action")
    if not isinstance(action, dict):
        return [*problems, "interactive.action is required."]
    if kind == "button":
        buttons = action.get("buttons")
        if not isinstance(buttons, list) or not 1 <= len(buttons) <= 3:
            return [*problems, "interactive.action.buttons takes 1 to 3 buttons."]
        for button in buttons:
            reply = button.get("reply") if isinstance(button, dict) else None
            if not isinstance(reply, dict) or not reply.get("id") or not reply.get("title"):
                problems.append("Each button is {'type': 'reply', 'reply': {'id', 'title'}}.")
            elif len(str(reply["title"])) > 20 or len(str(reply["id"])) > 256:
                problems.append("A button title has at most 20 characters, its id 256.")
    elif kind == "list":
        sections = action.get("sections")
        if not str(action.get("button") or "") or len(str(action.get("button"))) > 20:
            problems.append("interactive.action.button is required, at most 20 characters.")
        if not isinstance(sections, list) or not 1 <= len(sections) <= 10:
            return [*problems, "interactive.action.sections takes 1 to 10 sections."]
        rows = [row for s in sections if isinstance(s, dict) for row in s.get("rows") or []]
        if not 1 <= len(rows) <= 10:
            problems.append("A list has 1 to 10 rows in all.")
        for row in rows:
            if not isinstance(row, dict) or not row.get("id") or not row.get("title"):
                problems.append("Each row needs an id and a title.")
            elif (
                len(str(row["id"])) > 200
                or len(str(row["title"])) > 24
                or len(str(row.get("description") or "")) > 72
            ):
                problems.append("A row id has at most 200 characters, title 24, description 72.")
    else:
        parameters = action.get("parameters")
        if not isinstance(parameters, dict) or not parameters.get("url"):
            problems.append("A cta_url action needs parameters.display_text and parameters.url.")
    return problems


class SendInput(serializers.Serializer):  # type: ignore[type-arg]
    channel = serializers.IntegerField(
        required=False, help_text="Optional when the organization has one active channel."
    )
    to = serializers.CharField(max_length=40, help_text="The recipient's number, E.164.")
    type = serializers.ChoiceField(choices=["text", "template", "media", "interactive"])
    text = TextInput(required=False)
    template = TemplateInput(required=False)
    media = MediaInput(required=False)
    interactive = serializers.DictField(required=False, help_text="Meta's interactive object.")
    reply_to = serializers.IntegerField(required=False, help_text="Our id of a message to quote.")
    priority = serializers.ChoiceField(choices=list(PRIORITIES), default="normal")
    idempotency_key = serializers.CharField(
        required=False,
        max_length=200,
        help_text="Repeating a request with the same key returns the same message.",
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        kind = attrs["type"]
        if attrs.get(kind) is None:
            raise serializers.ValidationError({kind: f"A {kind} message needs its '{kind}'."})
        others = [k for k in ("text", "template", "media", "interactive") if k != kind]
        given = [k for k in others if attrs.get(k) is not None]
        if given:
            raise serializers.ValidationError(
                {given[0]: f"A {kind} message takes no '{given[0]}'."}
            )
        if kind == "interactive" and (problems := _interactive_problems(attrs["interactive"])):
            raise serializers.ValidationError({"interactive": problems})
        return attrs

    def to_request(self) -> SendRequest:
        data = self.validated_data
        return SendRequest(
            to=data["to"],
            type=data["type"],
            channel_id=data.get("channel"),
            text=data.get("text"),
            template=data.get("template"),
            media=data.get("media"),
            interactive=data.get("interactive"),
            reply_to=data.get("reply_to"),
            priority=data["priority"],
            idempotency_key=data.get("idempotency_key") or None,
        )


# --- Output -------------------------------------------------------------------------------


class ErrorOutput(serializers.Serializer):  # type: ignore[type-arg]
    code = serializers.CharField(help_text="A stable code, e.g. outside_service_window.")
    detail = serializers.CharField()
    # Nested fields (a template's parameters, a bulk item) nest their messages the same way.
    errors = serializers.DictField(  # type: ignore[assignment]
        child=serializers.JSONField(),
        help_text="The messages of each field at fault: a list, or an object for nested fields.",
    )


class QueuedOutput(serializers.Serializer):  # type: ignore[type-arg]
    id = serializers.IntegerField()
    status = serializers.CharField()
    channel = serializers.IntegerField(source="channel_id")
    to = serializers.CharField(source="contact.wa_id")
    type = serializers.CharField()
    priority = serializers.SerializerMethodField()
    idempotency_key = serializers.CharField(allow_null=True)
    created_at = serializers.DateTimeField()

    def get_priority(self, message: Message) -> str:
        return PRIORITY_NAMES.get(message.priority, "normal")


class StatusEventOutput(serializers.Serializer):  # type: ignore[type-arg]
    status = serializers.CharField()
    at = serializers.DateTimeField()


class MessageErrorOutput(serializers.Serializer):  # type: ignore[type-arg]
    code = serializers.CharField()
    message = serializers.CharField()


class MessageOutput(serializers.Serializer):  # type: ignore[type-arg]
    id = serializers.IntegerField()
    direction = serializers.SerializerMethodField()
    channel = serializers.IntegerField(source="channel_id")
    contact = serializers.IntegerField(source="contact_id")
    to = serializers.SerializerMethodField(help_text="The recipient: a wa_id, or our number.")
    type = serializers.CharField()
    text = serializers.CharField()
    content = serializers.DictField()
    status = serializers.CharField()
    error = serializers.SerializerMethodField()
    priority = serializers.SerializerMethodField()
    campaign = serializers.SerializerMethodField(help_text="The campaign's id, if any.")
    reply_to = serializers.IntegerField(source="reply_to_id", allow_null=True)
    idempotency_key = serializers.CharField(allow_null=True)
    provider_message_id = serializers.CharField(allow_null=True)
    created_at = serializers.DateTimeField()
    queued_at = serializers.DateTimeField(allow_null=True)
    sent_at = serializers.DateTimeField(allow_null=True)
    delivered_at = serializers.DateTimeField(allow_null=True)
    read_at = serializers.DateTimeField(allow_null=True)
    failed_at = serializers.DateTimeField(allow_null=True)
    history = serializers.SerializerMethodField()

    def get_direction(self, message: Message) -> str:
        return DIRECTION_NAMES[message.direction]

    def get_to(self, message: Message) -> str:
        if message.direction == Message.Direction.INBOUND:
            return message.channel.address
        return message.contact.wa_id or message.contact.user_id or ""

    @extend_schema_field(MessageErrorOutput(allow_null=True))
    def get_error(self, message: Message) -> dict[str, str] | None:
        if not (message.error_code or message.error_message):
            return None
        return {"code": message.error_code, "message": message.error_message}

    def get_priority(self, message: Message) -> str:
        return PRIORITY_NAMES.get(message.priority, "normal")

    @extend_schema_field(serializers.IntegerField(allow_null=True))
    def get_campaign(self, message: Message) -> int | None:
        try:
            return message.campaign_audience.campaign_id
        except ObjectDoesNotExist:
            return None

    @extend_schema_field(StatusEventOutput(many=True))
    def get_history(self, message: Message) -> list[dict[str, Any]]:
        return [
            {"status": status, "at": serializers.DateTimeField().to_representation(at)}
            for status, at in message_status_history(message)
        ]


class AuthErrorOutput(serializers.Serializer):  # type: ignore[type-arg]
    detail = serializers.CharField()


# --- Views --------------------------------------------------------------------------------


class MessagingApi(APIView):
    """Bodies that cannot be read are refused in the same shape as every other refusal."""

    def handle_exception(self, exc: Exception) -> Response:
        if isinstance(exc, ParseError):
            return _error(
                "malformed", str(exc.detail), 400, {"non_field_errors": [str(exc.detail)]}
            )
        if isinstance(exc, UnsupportedMediaType):
            return _error("unsupported_media_type", str(exc.detail), 415)
        return super().handle_exception(exc)


_UNAUTHORIZED = {
    401: OpenApiResponse(AuthErrorOutput, description="No API key, or a revoked one."),
}
_REFUSALS = {
    **_UNAUTHORIZED,
    400: OpenApiResponse(ErrorOutput, description="Not a valid request, or an invalid number."),
    415: OpenApiResponse(ErrorOutput, description="A body that is not JSON."),
    404: OpenApiResponse(ErrorOutput, description="No such channel or quoted message."),
    409: OpenApiResponse(
        ErrorOutput,
        description="The idempotency key was used for another message, or the "
        "channel is inactive or its credentials were rejected.",
    ),
    422: OpenApiResponse(
        ErrorOutput,
        description="Refused by a rule: outside the 24-hour window, opted out, a template "
        "that is missing, not approved or with unfilled placeholders.",
    ),
}


class MessageSendApi(MessagingApi):
    @extend_schema(
        operation_id="messaging_send",
        request=SendInput,
        responses={
            202: OpenApiResponse(QueuedOutput, description="Queued."),
            200: OpenApiResponse(
                QueuedOutput, description="Already queued with this idempotency key."
            ),
            **_REFUSALS,
        },
        examples=[
            OpenApiExample(
                "Text",
                request_only=True,
                value={"to": "+447700900461", "type": "text", "text": {"body": "Hello!"}},
            ),
            OpenApiExample(
                "Template",
                request_only=True,
                value={
                    "channel": 1,
                    "to": "+447700900461",
                    "type": "template",
                    "template": {
                        "name": "order_shipped",
                        "language": "en_US",
                        "parameters": ["Dana", "#48213"],
                    },
                    "idempotency_key": "order-48213-shipped",
                },
            ),
        ],
    )
    def post(self, request: Request) -> Response:
        serializer = SendInput(data=request.data)
        if not serializer.is_valid():
            return _invalid(serializer.errors)
        try:
            outcome = outbound_send(
                organization=_organization(request), request=serializer.to_request()
            )
        except SendRefused as refused:
            return _refused(refused)
        return Response(
            QueuedOutput(outcome.message).data,
            status=status.HTTP_202_ACCEPTED if outcome.created else status.HTTP_200_OK,
        )


class BulkInput(serializers.Serializer):  # type: ignore[type-arg]
    messages = serializers.ListField(
        child=serializers.JSONField(), allow_empty=False, help_text="At most 1,000."
    )


class BulkInputSchema(serializers.Serializer):  # type: ignore[type-arg]
    messages = SendInput(many=True, help_text="1 to 1,000 messages, each as /send/ takes it.")


class BulkItemOutput(serializers.Serializer):  # type: ignore[type-arg]
    index = serializers.IntegerField()
    status = serializers.ChoiceField(choices=["queued", "duplicate", "error"])
    id = serializers.IntegerField(allow_null=True)
    code = serializers.CharField(allow_null=True)
    errors = serializers.DictField(allow_null=True)  # type: ignore[assignment]


class BulkOutput(serializers.Serializer):  # type: ignore[type-arg]
    queued = serializers.IntegerField()
    duplicates = serializers.IntegerField()
    errors = serializers.IntegerField()  # type: ignore[assignment]
    results = BulkItemOutput(many=True)


class MessageSendBulkApi(MessagingApi):
    @extend_schema(
        operation_id="messaging_send_bulk",
        request=BulkInputSchema,
        responses={
            200: OpenApiResponse(
                BulkOutput, description="Each message's outcome, in the order given."
            ),
            400: OpenApiResponse(
                ErrorOutput, description="No list of messages, or more than 1,000."
            ),
            415: OpenApiResponse(ErrorOutput, description="A body that is not JSON."),
            **_UNAUTHORIZED,
        },
    )
    def post(self, request: Request) -> Response:
        envelope = BulkInput(data=request.data)
        if not envelope.is_valid():
            return _invalid(envelope.errors)
        items = envelope.validated_data["messages"]
        if len(items) > BULK_MAX_MESSAGES:
            return _error(
                "too_many_messages",
                f"A bulk request takes at most {BULK_MAX_MESSAGES:,} messages; got {len(items):,}.",
                400,
                {"messages": [f"At most {BULK_MAX_MESSAGES:,} messages."]},
            )
        requests: list[SendRequest | None] = []
        shape_errors: dict[int, Any] = {}
        for index, item in enumerate(items):
            serializer = SendInput(data=item)
            if serializer.is_valid():
                requests.append(serializer.to_request())
            else:
                requests.append(None)
                shape_errors[index] = serializer.errors
        results = outbound_send_bulk(organization=_organization(request), requests=requests)
        answers: list[dict[str, Any]] = []
        for result in results:
            if result.outcome is not None:
                answers.append(
                    {
                        "index": result.index,
                        "status": "queued" if result.outcome.created else "duplicate",
                        "id": result.outcome.message.id,
                        "code": None,
                        "errors": None,
                    }
                )
            elif result.refused is not None:
                refused = result.refused
                answers.append(
                    {
                        "index": result.index,
                        "status": "error",
                        "id": None,
                        "code": refused.code,
                        "errors": {refused.field or "non_field_errors": [refused.message]},
                    }
                )
            else:
                answers.append(
                    {
                        "index": result.index,
                        "status": "error",
                        "id": None,
                        "code": "invalid",
                        "errors": shape_errors.get(result.index, {}),
                    }
                )
        counts = {
            kind: sum(a["status"] == kind for a in answers)
            for kind in ("queued", "duplicate", "error")
        }
        return Response(
            {
                "queued": counts["queued"],
                "duplicates": counts["duplicate"],
                "errors": counts["error"],
                "results": answers,
            }
        )


class MessageDetailApi(MessagingApi):
    @extend_schema(
        operation_id="message_detail",
        responses={
            200: MessageOutput,
            404: OpenApiResponse(ErrorOutput, description="No such message."),
            **_UNAUTHORIZED,
        },
    )
    def get(self, request: Request, message_id: int) -> Response:
        message = message_get(organization=_organization(request), message_id=message_id)
        if message is None:
            return _error("message_not_found", f"Message {message_id} not found.", 404)
        return Response(MessageOutput(message).data)


class MessageFilterInput(serializers.Serializer):  # type: ignore[type-arg]
    status = serializers.ChoiceField(choices=Message.Status.choices, required=False)
    direction = serializers.ChoiceField(choices=list(DIRECTIONS), required=False)
    contact = serializers.CharField(
        required=False, max_length=40, help_text="The contact's phone number."
    )
    created_after = serializers.DateTimeField(required=False)
    created_before = serializers.DateTimeField(required=False)

    def validate_contact(self, value: str) -> str:
        try:
            return normalize_msisdn(value)
        except InvalidPhoneNumber as exc:
            raise serializers.ValidationError(str(exc)) from None


class MessageCursorPagination(CursorPagination):
    ordering = ("-created_at", "-id")
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500


class MessageListApi(MessagingApi, generics.ListAPIView):  # type: ignore[type-arg]
    serializer_class = MessageOutput
    pagination_class = MessageCursorPagination

    def get_queryset(self) -> Any:
        if getattr(self, "swagger_fake_view", False):
            return Message.objects.none()
        filters = MessageFilterInput(data=self.request.query_params)
        filters.is_valid(raise_exception=True)
        data = filters.validated_data
        return message_list(
            organization=_organization(self.request),
            status=data.get("status"),
            direction=DIRECTIONS[data["direction"]] if data.get("direction") else None,
            wa_id=data.get("contact"),
            created_after=data.get("created_after"),
            created_before=data.get("created_before"),
        )

    @extend_schema(
        operation_id="message_list",
        parameters=[MessageFilterInput],
        responses={
            200: MessageOutput(many=True),
            400: OpenApiResponse(ErrorOutput, description="A filter or the cursor is not valid."),
            **_UNAUTHORIZED,
        },
    )
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        filters = MessageFilterInput(data=request.query_params)
        if not filters.is_valid():
            return _invalid(filters.errors)
        try:
            return super().get(request, *args, **kwargs)
        except NotFound:
            # The paginator's only refusal: a cursor we did not hand out is bad input.
            return _invalid({"cursor": ["Not a cursor of this list."]})
