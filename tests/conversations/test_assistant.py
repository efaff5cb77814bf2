"""AI replies through the real worker, the real openai library and the fake OpenAI and Meta
APIs: one reply per burst, never lost, never doubled."""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from django.conf import settings
from django.test import Client
from django.utils import timezone
from prometheus_client import REGISTRY

from conversations.assistant import conversation_reply, replies_sweep
from conversations.models import AiReply, Assistant, Contact, Conversation, Message
from conversations.services import message_receive
from conversations.tasks import reply_to_conversation
from conversations.types import InboundMessage, MediaRef
from tests.conftest import Worker, wait_for
from tests.factories import ContactFactory, MessageFactory
from tests.fake_openai import API_KEY, RATE_LIMITED, SERVER_ERROR, OpenAIState
from tests.fakes import ProviderState
from whatsapp_platform.models import Channel

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("celery_worker")]

CUSTOMER = "31612345678"


@pytest.fixture
def assistant(meta_channel: Channel, openai_api: OpenAIState) -> Assistant:
    return Assistant.objects.create(
        channel=meta_channel,
        enabled=True,
        instructions="You are Acme's helpful assistant.",
        debounce_seconds=1,
    )


def receive(channel: Channel, text: str, **fields: Any) -> Message:
    """A customer's message as the webhook processing records it."""
    inbound = InboundMessage(
        provider_message_id=fields.pop("provider_message_id", f"wamid.IN{uuid.uuid4().hex}"),
        wa_id=fields.pop("wa_id", CUSTOMER),
        user_id=None,
        profile_name="Ana",
        username="",
        type=fields.pop("type", "text"),
        text=text,
        content=fields.pop("content", {"text": {"body": text}}),
        timestamp=None,
        reply_to_provider_id=None,
        media=fields.pop("media", None),
    )
    message, _ = message_receive(channel=channel, inbound=inbound)
    return message


def sent_texts(provider_api: ProviderState) -> list[str]:
    return [r.json().get("text", {}).get("body", "") for r in provider_api.sends()]


def replies(conversation_id: int) -> list[Message]:
    return list(
        Message.objects.filter(
            conversation_id=conversation_id, direction=Message.Direction.OUTBOUND
        ).order_by("id")
    )


def sent_replies(conversation_id: int, count: int, timeout: float = 60) -> list[Message]:
    def check() -> list[Message] | None:
        found = replies(conversation_id)
        done = [m for m in found if m.status == Message.Status.SENT]
        return found if len(done) >= count else None

    result = wait_for(check, timeout=timeout)
    assert isinstance(result, list)
    return result


def conversation_of(message: Message) -> Conversation:
    assert message.conversation_id is not None
    return Conversation.objects.get(id=message.conversation_id)


def test_a_burst_of_five_messages_gets_one_reply_that_carries_all_five(
    meta_channel: Channel, assistant: Assistant, openai_api: OpenAIState, provider_api: Any
) -> None:
    Assistant.objects.filter(id=assistant.id).update(debounce_seconds=4)
    texts = ["Hi", "I ordered a lamp", "order 7781", "it arrived broken", "what can I do?"]
    for text in texts:
        message = receive(meta_channel, text)
        time.sleep(0.4)

    [reply] = sent_replies(message.conversation_id or 0, 1)

    assert len(openai_api.responses) == 1
    assert openai_api.user_texts(0) == texts
    assert openai_api.responses[0]["instructions"] == "You are Acme's helpful assistant."
    assert reply.text == "Answering: " + " / ".join(texts)
    assert sent_texts(provider_api) == [reply.text]
    record = AiReply.objects.get(message=reply)
    assert (record.input_tokens, record.output_tokens) == openai_api.usage[record.response_id]
    assert record.model == "gpt-4.1-mini-2025-04-14"
    assert record.outcome == AiReply.Outcome.SENT
    conversation = conversation_of(message)
    assert conversation.status == Conversation.Status.REPLY_SENT
    assert conversation.ai_conversation_id in openai_api.conversations
    assert conversation.answered_until_id == message.id


def test_the_next_turn_keeps_the_conversation_state_and_sends_only_new_messages(
    meta_channel: Channel, assistant: Assistant, openai_api: OpenAIState, provider_api: Any
) -> None:
    first = receive(meta_channel, "Do you ship to Spain?")
    sent_replies(first.conversation_id or 0, 1)
    receive(meta_channel, "And to Portugal?")
    sent_replies(first.conversation_id or 0, 2)

    assert len(openai_api.responses) == 2
    assert openai_api.responses[0]["conversation"] == openai_api.responses[1]["conversation"]
    assert openai_api.user_texts(1) == ["And to Portugal?"]
    state = openai_api.conversations[openai_api.responses[1]["conversation"]]
    assert len(state) == 4  # two questions, two answers


def test_a_redelivered_message_is_answered_once(
    meta_channel: Channel, assistant: Assistant, openai_api: OpenAIState, provider_api: Any
) -> None:
    message = receive(meta_channel, "Where is my parcel?", provider_message_id="wamid.SAME")
    receive(meta_channel, "Where is my parcel?", provider_message_id="wamid.SAME")
    sent_replies(message.conversation_id or 0, 1)
    receive(meta_channel, "Where is my parcel?", provider_message_id="wamid.SAME")
    # The reply task delivered again, after the answer.
    reply_to_conversation.delay(message.conversation_id or 0)
    reply_to_conversation.delay(message.conversation_id or 0)
    time.sleep(3)

    assert len(replies(message.conversation_id or 0)) == 1
    assert len(openai_api.responses) == 1
    assert AiReply.objects.count() == 1


@pytest.fixture(scope="module")
def second_worker(
    celery_worker: Worker,
    providers: tuple[str, ProviderState],
    openai_fake: tuple[str, OpenAIState],
    aws_endpoint: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Worker]:
    """A second worker on the `ai` queue, and the only one on `heartbeat-ai`, a queue whose
    visibility timeout (4 s) is shorter than a slow reply."""
    sqs = boto3.client("sqs", endpoint_url=aws_endpoint, region_name=settings.AWS_REGION)
    sqs.create_queue(
        QueueName=f"{settings.SQS_QUEUE_PREFIX}heartbeat-ai",
        Attributes={"VisibilityTimeout": "4"},
    )
    worker = Worker(
        tmp_path_factory.mktemp("second-worker") / "worker.log",
        providers[0],
        extra_env={
            "OPENAI_API_KEY": API_KEY,
            "OPENAI_BASE_URL": openai_fake[0],
            "SQS_VISIBILITY_TIMEOUT": "4",
        },
        queues=("ai", "heartbeat-ai"),
    )
    worker.start()
    yield worker
    worker.stop()


def test_workers_racing_on_one_conversation_send_one_reply(
    meta_channel: Channel,
    assistant: Assistant,
    openai_api: OpenAIState,
    provider_api: Any,
    second_worker: Worker,
) -> None:
    Assistant.objects.filter(id=assistant.id).update(enabled=False)  # no scheduled task
    message = receive(meta_channel, "Is the shop open on Sunday?")
    Assistant.objects.filter(id=assistant.id).update(enabled=True)
    openai_api.latency = 1.0
    for _ in range(6):
        reply_to_conversation.delay(message.conversation_id or 0)

    sent_replies(message.conversation_id or 0, 1)
    time.sleep(3)

    assert len(openai_api.responses) == 1
    assert len(replies(message.conversation_id or 0)) == 1
    assert sent_texts(provider_api) == ["Answering: Is the shop open on Sunday?"]


def test_a_reply_longer_than_the_visibility_timeout_runs_once(
    meta_channel: Channel,
    assistant: Assistant,
    openai_api: OpenAIState,
    provider_api: Any,
    second_worker: Worker,
) -> None:
    Assistant.objects.filter(id=assistant.id).update(enabled=False)
    message = receive(meta_channel, "Can you check my invoice?")
    Assistant.objects.filter(id=assistant.id).update(enabled=True)
    openai_api.latency = 10.0  # more than twice the queue's 4 s visibility timeout

    result = reply_to_conversation.apply_async(
        args=(message.conversation_id,), queue="heartbeat-ai"
    )
    sent_replies(message.conversation_id or 0, 1)

    log = Path(second_worker.log_path).read_text()
    assert log.count(f"reply_to_conversation[{result.id}] received") == 1
    assert len(openai_api.responses) == 1
    sqs = boto3.client(
        "sqs", endpoint_url=settings.SQS_ENDPOINT_URL, region_name=settings.AWS_REGION
    )
    url = sqs.get_queue_url(QueueName=f"{settings.SQS_QUEUE_PREFIX}heartbeat-ai")["QueueUrl"]

    def drained() -> bool:
        attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        return (
            attributes["ApproximateNumberOfMessages"] == "0"
            and attributes["ApproximateNumberOfMessagesNotVisible"] == "0"
        )

    wait_for(drained, timeout=20)
    assert Path(second_worker.log_path).read_text().count(f"[{result.id}] received") == 1


def test_a_message_during_generation_gets_a_follow_up(
    meta_channel: Channel, assistant: Assistant, openai_api: OpenAIState, provider_api: Any
) -> None:
    openai_api.latency = 4.0
    first = receive(meta_channel, "What are your opening hours?")
    wait_for(lambda: openai_api.responses, timeout=30)
    receive(meta_channel, "And where are you?")

    first_reply, second_reply = sent_replies(first.conversation_id or 0, 2)

    assert len(openai_api.responses) == 2
    assert openai_api.user_texts(0) == ["What are your opening hours?"]
    assert openai_api.user_texts(1) == ["And where are you?"]
    assert first_reply.text == "Answering: What are your opening hours?"
    assert second_reply.text == "Answering: And where are you?"


def test_openai_failing_then_succeeding_sends_the_answer(
    meta_channel: Channel, assistant: Assistant, openai_api: OpenAIState, provider_api: Any
) -> None:
    openai_api.errors += [RATE_LIMITED, SERVER_ERROR]
    message = receive(meta_channel, "Do you have gift cards?")

    [reply] = sent_replies(message.conversation_id or 0, 1)

    assert len(openai_api.responses) == 3
    assert reply.text == "Answering: Do you have gift cards?"
    conversation = conversation_of(message)
    assert conversation.status == Conversation.Status.REPLY_SENT
    assert not conversation.needs_human


def test_openai_failing_past_the_last_attempt_sends_the_fallback_once(
    meta_channel: Channel, assistant: Assistant, openai_api: OpenAIState, provider_api: Any
) -> None:
    openai_api.errors += [SERVER_ERROR] * 20
    message = receive(meta_channel, "My card was charged twice")

    [reply] = sent_replies(message.conversation_id or 0, 1)
    time.sleep(3)

    assert reply.text == Assistant.DEFAULT_FALLBACK
    assert len(replies(message.conversation_id or 0)) == 1
    assert len(openai_api.responses) == settings.AI_REPLY_MAX_RETRIES + 1
    assert conversation_of(message).needs_human
    assert AiReply.objects.get().outcome == AiReply.Outcome.FALLBACK


def test_a_handover_keyword_stops_replies_until_resumed_and_handled_messages_stay_answered(
    admin_client: Client,
    meta_channel: Channel,
    assistant: Assistant,
    openai_api: OpenAIState,
    provider_api: Any,
) -> None:
    asked = receive(meta_channel, "Can I talk to a HUMAN please?")
    conversation = conversation_of(asked)
    assert conversation.status == Conversation.Status.HANDOVER
    assert conversation.needs_human
    receive(meta_channel, "Hello? Anyone?")
    time.sleep(assistant.debounce_seconds + 2)
    assert openai_api.responses == []
    assert replies(conversation.id) == []

    response = admin_client.post(
        "/admin/conversations/conversation/",
        {"action": "resume_ai", "_selected_action": [conversation.id]},
    )
    assert response.status_code == 302
    conversation.refresh_from_db()
    assert conversation.status == Conversation.Status.OPEN
    receive(meta_channel, "Thanks, one more question: is delivery free?")

    [reply] = sent_replies(conversation.id, 1)
    assert openai_api.user_texts(0)[-1] == "Thanks, one more question: is delivery free?"
    assert "Hello? Anyone?" in openai_api.user_texts(0)  # context, but not answered again
    assert reply.text == "Answering: " + " / ".join(openai_api.user_texts(0))
    assert AiReply.objects.get().first_message_id > asked.id


def test_the_admin_hands_over_and_an_agent_replies_through_the_pipeline(
    admin_client: Client,
    meta_channel: Channel,
    assistant: Assistant,
    openai_api: OpenAIState,
    provider_api: Any,
) -> None:
    Assistant.objects.filter(id=assistant.id).update(debounce_seconds=5)
    message = receive(meta_channel, "I need to change my address")
    conversation = conversation_of(message)

    response = admin_client.post(
        "/admin/conversations/conversation/",
        {"action": "hand_over", "_selected_action": [conversation.id]},
    )
    assert response.status_code == 302
    response = admin_client.post(
        f"/admin/conversations/conversation/{conversation.id}/change/",
        {"needs_human": "on", "reply_text": "Sure, what is the new address?"},
    )
    assert response.status_code == 302

    [reply] = sent_replies(conversation.id, 1)
    assert reply.text == "Sure, what is the new address?"
    assert reply.priority == Message.Priority.HIGH
    time.sleep(5)
    assert openai_api.responses == []  # the pending AI reply did not run
    page = admin_client.get(f"/admin/conversations/conversation/{conversation.id}/change/")
    assert b"I need to change my address" in page.content
    assert b"Sure, what is the new address?" in page.content


def test_an_agent_reply_outside_the_window_must_be_a_template(
    admin_client: Client, meta_channel: Channel, provider_api: Any
) -> None:
    contact = ContactFactory(
        organization=meta_channel.organization,
        last_inbound_at=timezone.now() - timedelta(hours=30),
    )
    conversation = Conversation.objects.create(
        organization=meta_channel.organization, channel=meta_channel, contact=contact
    )
    url = f"/admin/conversations/conversation/{conversation.id}/change/"

    response = admin_client.post(url, {"reply_text": "Are you still there?"}, follow=True)
    assert b"more than 24 hours old: send a template" in response.content
    assert Message.objects.count() == 0

    admin_client.post(
        url,
        {
            "reply_template": "order_shipped",
            "reply_language": "en_US",
            "reply_parameters": "7781",
        },
    )
    [sent] = sent_replies(conversation.id, 1)
    assert sent.type == Message.Type.TEMPLATE
    body = provider_api.sends()[0].json()
    assert body["template"]["name"] == "order_shipped"


def test_an_opted_out_contact_gets_no_reply(
    meta_channel: Channel, assistant: Assistant, openai_api: OpenAIState, provider_api: Any
) -> None:
    message = receive(meta_channel, "STOP")
    assert Contact.objects.get(id=message.contact_id).is_opted_out
    receive(meta_channel, "why do you keep writing?")
    time.sleep(assistant.debounce_seconds + 2)

    assert openai_api.responses == []
    assert replies(message.conversation_id or 0) == []


def test_no_reply_outside_the_24_hour_window(
    meta_channel: Channel, assistant: Assistant, openai_api: OpenAIState
) -> None:
    contact = ContactFactory(
        organization=meta_channel.organization,
        last_inbound_at=timezone.now() - timedelta(hours=25),
    )
    conversation = Conversation.objects.create(
        organization=meta_channel.organization, channel=meta_channel, contact=contact
    )
    MessageFactory(
        channel=meta_channel,
        contact=contact,
        conversation=conversation,
        direction=Message.Direction.INBOUND,
        status=Message.Status.RECEIVED,
        text="Hello from yesterday",
    )

    outcome = conversation_reply(conversation_id=conversation.id)

    assert outcome.outcome == "outside_window"
    assert openai_api.responses == []
    assert replies(conversation.id) == []


def test_a_spent_monthly_budget_stops_replies_and_the_admin_says_so(
    admin_client: Client,
    meta_channel: Channel,
    assistant: Assistant,
    openai_api: OpenAIState,
    settings: Any,
) -> None:
    settings.AI_MONTHLY_TOKEN_BUDGET = 1000
    contact = ContactFactory(organization=meta_channel.organization, last_inbound_at=timezone.now())
    conversation = Conversation.objects.create(
        organization=meta_channel.organization, channel=meta_channel, contact=contact
    )
    earlier = MessageFactory(
        channel=meta_channel, contact=contact, conversation=conversation, text="Earlier answer"
    )
    AiReply.objects.create(
        organization=meta_channel.organization,
        conversation=conversation,
        message=earlier,
        first_message_id=0,
        last_message_id=0,
        outcome=AiReply.Outcome.SENT,
        input_tokens=900,
        output_tokens=100,
    )
    MessageFactory(
        channel=meta_channel,
        contact=contact,
        conversation=conversation,
        direction=Message.Direction.INBOUND,
        status=Message.Status.RECEIVED,
        text="One more thing",
    )

    before = REGISTRY.get_sample_value("ai_replies_total", {"outcome": "budget_exhausted"}) or 0

    outcome = conversation_reply(conversation_id=conversation.id)

    assert outcome.outcome == "budget_exhausted"
    assert REGISTRY.get_sample_value("ai_replies_total", {"outcome": "budget_exhausted"}) == (
        before + 1
    )
    assert openai_api.responses == []
    conversation.refresh_from_db()
    assert conversation.needs_human
    page = admin_client.get("/admin/conversations/organizationaiusage/")
    assert b"Spent (1000): AI replies are paused" in page.content
    page = admin_client.get(f"/admin/conversations/assistant/{assistant.id}/change/")
    assert b"monthly token budget is spent" in page.content
    alerts = admin_client.get("/monitoring/alerts").json()["alerts"]
    [alert] = [a for a in alerts if a["name"] == "ai_budget_spent"]
    assert alert["subject"] == f"organization {meta_channel.organization_id}"
    assert alert["threshold"] == 1000


def test_a_customer_image_goes_to_the_model_as_image_input(
    meta_channel: Channel, assistant: Assistant, openai_api: OpenAIState, provider_api: Any
) -> None:
    photo = b"\x89PNG\r\n\x1a\n" + b"suspicious message screenshot" * 20
    provider_api.media["media-scam-1"] = (photo, "image/png")
    message = receive(
        meta_channel,
        "is this a scam?",
        type="image",
        content={"image": {"id": "media-scam-1", "caption": "is this a scam?"}},
        media=MediaRef(media_id="media-scam-1", url="", mime_type="image/png", filename=""),
    )

    [reply] = sent_replies(message.conversation_id or 0, 1)

    [item] = openai_api.responses[-1]["input"]
    assert item["content"][0] == {"type": "input_text", "text": "is this a scam?"}
    image = item["content"][1]
    assert image["type"] == "input_image"
    assert image["image_url"] == "data:image/png;base64," + base64.b64encode(photo).decode()
    assert reply.text == "Answering: is this a scam? / (an image)"


def test_other_media_is_described_by_type_and_caption(
    meta_channel: Channel, assistant: Assistant, openai_api: OpenAIState, provider_api: Any
) -> None:
    provider_api.media["media-doc-1"] = (b"%PDF-1.7 invoice", "application/pdf")
    receive(
        meta_channel,
        "my invoice",
        type="document",
        content={"document": {"id": "media-doc-1", "caption": "my invoice"}},
        media=MediaRef(
            media_id="media-doc-1",
            url="",
            mime_type="application/pdf",
            filename="invoice.pdf",
        ),
    )
    message = receive(meta_channel, "can you read it?")

    sent_replies(message.conversation_id or 0, 1)

    assert openai_api.user_texts(0) == [
        "[The customer sent document named invoice.pdf: my invoice]",
        "can you read it?",
    ]


def test_without_an_api_key_ai_replies_are_off_and_the_admin_says_why(
    admin_client: Client, meta_channel: Channel, assistant: Assistant, settings: Any
) -> None:
    settings.OPENAI_API_KEY = ""
    message = receive(meta_channel, "Hello")

    assert conversation_of(message).reply_due_at is None
    page = admin_client.get(f"/admin/conversations/assistant/{assistant.id}/change/")
    assert b"OPENAI_API_KEY is not set: AI replies are off." in page.content


def waiting_conversation(channel: Channel, **fields: Any) -> Conversation:
    """A conversation with one unanswered customer message and no reply task scheduled."""
    contact = ContactFactory(organization=channel.organization, last_inbound_at=timezone.now())
    conversation = Conversation.objects.create(
        organization=channel.organization, channel=channel, contact=contact, **fields
    )
    MessageFactory(
        channel=channel,
        contact=contact,
        conversation=conversation,
        direction=Message.Direction.INBOUND,
        status=Message.Status.RECEIVED,
        text="Are you there?",
    )
    return conversation


def test_a_held_lease_keeps_others_out_and_an_expired_one_is_taken_over(
    meta_channel: Channel, assistant: Assistant, openai_api: OpenAIState, provider_api: Any
) -> None:
    held = waiting_conversation(
        meta_channel,
        status=Conversation.Status.PROCESSING_REPLY,
        lease_expires_at=timezone.now() + timedelta(minutes=1),
    )
    assert conversation_reply(conversation_id=held.id).outcome == "busy"
    assert openai_api.responses == []

    Conversation.objects.filter(id=held.id).update(
        lease_expires_at=timezone.now() - timedelta(seconds=1)
    )
    assert conversation_reply(conversation_id=held.id).outcome == "sent"
    [reply] = sent_replies(held.id, 1)
    assert reply.text == "Answering: Are you there?"
    held.refresh_from_db()
    assert held.status == Conversation.Status.REPLY_SENT
    assert held.lease_expires_at is None


def test_the_sweeper_answers_a_reply_whose_task_was_lost(
    meta_channel: Channel, assistant: Assistant, openai_api: OpenAIState, provider_api: Any
) -> None:
    lost = waiting_conversation(
        meta_channel,
        status=Conversation.Status.REPLY_PENDING,
        reply_due_at=timezone.now() - timedelta(minutes=5),
    )

    assert replies_sweep() == 1

    [reply] = sent_replies(lost.id, 1)
    assert reply.text == "Answering: Are you there?"


def test_a_provider_failure_after_the_ai_answered_does_not_ask_the_ai_again(
    meta_channel: Channel, assistant: Assistant, openai_api: OpenAIState, provider_api: Any
) -> None:
    provider_api.send_errors += [
        (
            500,
            {
                "error": {
                    "message": "(#131000) Something went wrong",
                    "type": "OAuthException",
                    "code": 131000,
                    "fbtrace_id": "AbCdEf",
                }
            },
        )
    ] * 2
    message = receive(meta_channel, "Can I pay by invoice?")

    [reply] = sent_replies(message.conversation_id or 0, 1)

    assert len(provider_api.sends()) == 3
    assert reply.attempts == 3
    assert len(openai_api.responses) == 1
    assert AiReply.objects.get().message_id == reply.id
