from django.apps import AppConfig


class WhatsappPlatformConfig(AppConfig):
    name = "whatsapp_platform"
    verbose_name = "Tenancy"

    def ready(self) -> None:
        from whatsapp_platform import checks  # noqa: F401  (registers the system checks)
