"""REST API authentication by organization API key (`Authorization: Bearer wpk_...`)."""

from __future__ import annotations

from dataclasses import dataclass

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions
from rest_framework.request import Request

from whatsapp_platform.models import ApiKey, Organization
from whatsapp_platform.services import api_key_authenticate


@dataclass(frozen=True)
class ApiClient:
    """The caller of an API request: an organization, through one of its keys."""

    organization: Organization
    api_key: ApiKey
    is_authenticated: bool = True
    is_staff: bool = False

    def __str__(self) -> str:
        return f"{self.organization} ({self.api_key.key_prefix}…)"


class ApiKeyAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request: Request) -> tuple[ApiClient, ApiKey] | None:
        header = authentication.get_authorization_header(request).decode(errors="replace")
        raw_key = request.headers.get("X-API-Key", "")
        if header:
            scheme, _, token = header.partition(" ")
            if scheme != self.keyword:
                return None
            raw_key = token.strip()
        if not raw_key:
            return None
        api_key = api_key_authenticate(raw_key=raw_key)
        if api_key is None:
            raise exceptions.AuthenticationFailed("Invalid or revoked API key.")
        return ApiClient(organization=api_key.organization, api_key=api_key), api_key

    def authenticate_header(self, request: Request) -> str:
        return self.keyword


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):  # type: ignore[no-untyped-call]
    target_class = "whatsapp_platform.authentication.ApiKeyAuthentication"
    name = "ApiKey"

    def get_security_definition(self, auto_schema: object) -> dict[str, str]:
        return {"type": "http", "scheme": "bearer", "description": "An organization API key."}
