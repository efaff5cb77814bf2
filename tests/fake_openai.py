"""A local stand-in for the OpenAI API: the Conversations and Responses endpoints the openai
library calls, with their real request, response and error shapes."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

API_KEY = "sk-test-platform-key"

RATE_LIMITED = (
    429,
    {
        "error": {
            "message": "Rate limit reached for gpt-4.1-mini on tokens per min (TPM).",
            "type": "tokens",
            "param": None,
            "code": "rate_limit_exceeded",
        }
    },
)
SERVER_ERROR = (
    500,
    {
        "error": {
            "message": "The server had an error while processing your request. Sorry about that!",
            "type": "server_error",
            "param": None,
            "code": None,
        }
    },
)


@dataclass
class OpenAIState:
    # Every POST /v1/responses body received, in order.
    responses: list[dict[str, Any]] = field(default_factory=list)
    # What each response reported: response id -> (input tokens, output tokens).
    usage: dict[str, tuple[int, int]] = field(default_factory=dict)
    # Conversation id -> every item added to it (inputs and the assistant's outputs).
    conversations: dict[str, list[Any]] = field(default_factory=dict)
    # Scripted answers for the next response calls, in order: (HTTP status, JSON body).
    errors: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    # Seconds each response takes, as a real model's generation does.
    latency: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def reset(self) -> None:
        with self.lock:
            self.responses.clear()
            self.usage.clear()
            self.conversations.clear()
            self.errors.clear()
            self.latency = 0.0

    def user_texts(self, index: int) -> list[str]:
        """The user's input texts of the index-th response call."""
        return [
            part["text"]
            for item in self.responses[index].get("input", [])
            if isinstance(item, dict) and item.get("role") == "user"
            for part in (item["content"] if isinstance(item["content"], list) else [])
            if part.get("type") == "input_text"
        ]


def _answer_text(body: dict[str, Any]) -> str:
    texts = []
    for item in body.get("input", []):
        if isinstance(item, dict) and item.get("role") == "user":
            content = item.get("content")
            for part in content if isinstance(content, list) else []:
                if part.get("type") == "input_text":
                    texts.append(part["text"])
                elif part.get("type") == "input_image":
                    texts.append("(an image)")
    return "Answering: " + " / ".join(texts)


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _json(self, status: int, payload: dict[str, Any]) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("x-request-id", f"req_{uuid.uuid4().hex}")
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        state = self.server.state
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        if self.headers.get("Authorization") != f"Bearer {API_KEY}":
            return self._json(
                401,
                {
                    "error": {
                        "message": "Incorrect API key provided.",
                        "type": "invalid_request_error",
                        "param": None,
                        "code": "invalid_api_key",
                    }
                },
            )
        if self.path == "/v1/conversations":
            conversation_id = f"conv_{uuid.uuid4().hex}"
            with state.lock:
                state.conversations[conversation_id] = list(body.get("items") or [])
            return self._json(
                200,
                {
                    "id": conversation_id,
                    "object": "conversation",
                    "created_at": int(time.time()),
                    "metadata": body.get("metadata") or {},
                },
            )
        if self.path == "/v1/responses":
            return self._response(body)
        return self._json(
            404,
            {
                "error": {
                    "message": f"Invalid URL (POST {self.path})",
                    "type": "invalid_request_error",
                    "param": None,
                    "code": None,
                }
            },
        )

    def _response(self, body: dict[str, Any]) -> None:
        state = self.server.state
        with state.lock:
            state.responses.append(body)
            scripted = state.errors.pop(0) if state.errors else None
        if state.latency:
            time.sleep(state.latency)
        if scripted is not None:
            return self._json(*scripted)
        conversation_id = body.get("conversation")
        if conversation_id is not None and conversation_id not in state.conversations:
            return self._json(
                404,
                {
                    "error": {
                        "message": f"Conversation with id '{conversation_id}' not found.",
                        "type": "invalid_request_error",
                        "param": "conversation",
                        "code": None,
                    }
                },
            )
        text = _answer_text(body)
        response_id = f"resp_{uuid.uuid4().hex}"
        input_tokens = len(json.dumps(body.get("input", ""))) // 4 + 17
        output_tokens = len(text) // 4 + 1
        output = {
            "id": f"msg_{uuid.uuid4().hex}",
            "type": "message",
            "status": "completed",
            "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": []}],
        }
        with state.lock:
            state.usage[response_id] = (input_tokens, output_tokens)
            if conversation_id is not None:
                state.conversations[conversation_id] += [*body.get("input", []), output]
        return self._json(
            200,
            {
                "id": response_id,
                "object": "response",
                "created_at": int(time.time()),
                "status": "completed",
                "error": None,
                "incomplete_details": None,
                "instructions": body.get("instructions"),
                "model": f"{body.get('model')}-2025-04-14",
                "output": [output],
                "parallel_tool_calls": True,
                "conversation": {"id": conversation_id} if conversation_id else None,
                "tool_choice": "auto",
                "tools": [],
                "truncation": body.get("truncation", "disabled"),
                "usage": {
                    "input_tokens": input_tokens,
                    "input_tokens_details": {"cached_tokens": 0},
                    "output_tokens": output_tokens,
                    "output_tokens_details": {"reasoning_tokens": 0},
                    "total_tokens": input_tokens + output_tokens,
                },
            },
        )


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    state: OpenAIState


@contextmanager
def openai_server() -> Iterator[tuple[str, OpenAIState]]:
    """Yields the base URL (OPENAI_BASE_URL, ending in /v1) and the server's state."""
    server = _Server(("127.0.0.1", 0), _Handler)
    server.state = OpenAIState()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", server.state
    finally:
        server.shutdown()
        server.server_close()
