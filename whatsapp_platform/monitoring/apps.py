from django.apps import AppConfig


class MonitoringConfig(AppConfig):
    name = "whatsapp_platform.monitoring"
    label = "monitoring"
    verbose_name = "Operations"

    def ready(self) -> None:
        from django.core.signals import request_finished
        from django.utils.module_loading import autodiscover_modules

        from whatsapp_platform.monitoring import signals  # noqa: F401  (connects the receivers)
        from whatsapp_platform.monitoring.logs import clear_correlation_id

        request_finished.connect(clear_correlation_id, dispatch_uid="clear_correlation_id")

        # Every app's `metrics` module, so this process's scrape shows all of them at zero
        # before the first event, whoever defines them.
        autodiscover_modules("metrics")
