"""Settings, read from the environment (12-factor).

Every value has a default that needs no server and no credentials, so a fresh clone runs with
`make run`. Production sets DATABASE_URL, CELERY_BROKER_URL, ARCHIVE_S3_BUCKET and the secrets;
with DEBUG off, a missing secret stops the start-up instead of falling back to a default.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import django_stubs_ext
import environ
from celery.schedules import crontab
from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured

django_stubs_ext.monkeypatch()

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var"
VAR_DIR.mkdir(exist_ok=True)

env = environ.Env()
if (BASE_DIR / ".env").is_file():
    env.read_env(BASE_DIR / ".env")

DEBUG = env.bool("DEBUG", default=True)


def _secret(name: str, generate: str) -> str:
    """A secret from the environment; in DEBUG only, one generated once into var/."""
    value: str = env.str(name, default="")
    if value:
        return value
    if not DEBUG:
        raise ImproperlyConfigured(f"{name} must be set when DEBUG is off.")
    path = VAR_DIR / name.lower()
    if not path.exists():
        path.write_text(generate)
        path.chmod(0o600)
    return path.read_text().strip()


SECRET_KEY = _secret("SECRET_KEY", secrets.token_urlsafe(50))
# Comma-separated Fernet keys: the first encrypts, all decrypt (rotation).
FIELD_ENCRYPTION_KEY = _secret("FIELD_ENCRYPTION_KEY", Fernet.generate_key().decode())

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost"])
PUBLIC_BASE_URL = env.str("PUBLIC_BASE_URL", default="http://127.0.0.1:8000").rstrip("/")
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[PUBLIC_BASE_URL])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_celery_beat",
    "whatsapp_platform",
    "conversations",
    "campaigns",
    "webhooks",
    "archival",
    "whatsapp_platform.monitoring",
]

MIDDLEWARE = [
    # First, so every log line of the request carries its correlation id.
    "whatsapp_platform.monitoring.logs.CorrelationIdMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]
# Provider webhooks (/webhooks/, machine to machine) need no session, user, CSRF token, flash
# messages, frame options or static files: the WSGI application (whatsapp_platform/wsgi.py)
# serves them through this shorter chain. Host validation and HTTPS redirects still apply.
WEBHOOK_PATH_PREFIX = "/webhooks/"
WEBHOOK_MIDDLEWARE = [
    "whatsapp_platform.monitoring.logs.CorrelationIdMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
]

# Password sign-in, then what people's organization roles allow: permissions come only from
# memberships (and superusers have them all), never from Django permissions given directly.
AUTHENTICATION_BACKENDS = [
    "whatsapp_platform.roles.PasswordBackend",
    "whatsapp_platform.roles.MembershipBackend",
]

ROOT_URLCONF = "whatsapp_platform.urls"
WSGI_APPLICATION = "whatsapp_platform.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database ---------------------------------------------------------------------------------
DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'db.sqlite3'}"),
}
# Web and workers keep their connections for their lifetime; the health check (one `SELECT 1`
# per request or task) replaces a connection that died in between (database restart, failover).
DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=60)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = env.bool("CONN_HEALTH_CHECKS", default=True)
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The embedded default runs web, worker and beat on one file: wait for the lock instead of
    # failing, and take it at the start of each transaction so writers queue up in order.
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 30,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    # A file, not memory, so a worker process in the tests sees the same test database.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test.sqlite3")}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"

# --- Security (production: DEBUG off, behind a TLS-terminating proxy) ---------------------------
if not DEBUG:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
    SECURE_REDIRECT_EXEMPT = [r"^health/"]
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    STORAGES = {
        "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
        "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
    }

# --- REST API ---------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_AUTHENTICATION_CLASSES": ["whatsapp_platform.authentication.ApiKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
}
SPECTACULAR_SETTINGS = {
    "TITLE": "WhatsApp Business messaging platform API",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI from the platform's own static files: no CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# --- Celery -----------------------------------------------------------------------------------
# One queue per kind of work; `deploy/` runs a worker per queue or group of queues.
WORK_QUEUES = ("incoming", "outgoing", "ai", "archival", "analytics")
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="filesystem://")
AWS_REGION = env.str("AWS_REGION", default="us-east-1")
SQS_QUEUE_PREFIX = env.str("SQS_QUEUE_PREFIX", default="whatsapp-")
SQS_ENDPOINT_URL = env.str("SQS_ENDPOINT_URL", default="") or None
# SQS hands a message to another worker once it has been invisible this long: it must exceed the
# longest task, and no countdown may come near it (see TASK_MAX_COUNTDOWN).
SQS_VISIBILITY_TIMEOUT = env.int("SQS_VISIBILITY_TIMEOUT", default=1800)
# Deliveries of one message (worker crashes included) before SQS moves it to the dead letters.
SQS_MAX_RECEIVE_COUNT = env.int("SQS_MAX_RECEIVE_COUNT", default=5)
SQS_DEAD_LETTER_RETENTION_SECONDS = 14 * 24 * 3600
DEAD_LETTER_SUFFIX = "-dlq"

if CELERY_BROKER_URL.startswith("filesystem"):
    _broker_dir = VAR_DIR / "broker"
    (_broker_dir / "processed").mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, object] = {
        "data_folder_in": str(_broker_dir),
        "data_folder_out": str(_broker_dir),
        "processed_folder": str(_broker_dir / "processed"),
        "store_processed": False,
    }
elif CELERY_BROKER_URL.startswith("sqs"):
    if SQS_ENDPOINT_URL:
        # An SQS-compatible endpoint (a local server, a VPC endpoint): boto3, and so kombu's SQS
        # channel, read it from the environment.
        os.environ["AWS_ENDPOINT_URL_SQS"] = SQS_ENDPOINT_URL
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "region": AWS_REGION,
        "queue_name_prefix": SQS_QUEUE_PREFIX,
        "visibility_timeout": SQS_VISIBILITY_TIMEOUT,
        "wait_time_seconds": env.int("SQS_WAIT_TIME_SECONDS", default=10),
        # Fail fast while SQS is unreachable: a webhook is stored and answered all the same,
        # and the sweeper enqueues it later.
        "client-config": {"connect_timeout": 3, "read_timeout": 30, "retries": {"max_attempts": 2}},
        "polling_interval": env.float("SQS_POLLING_INTERVAL", default=1.0),
    }
    # kombu's SQS transport, fixed to go on polling a queue after a failed receive.
    CELERY_BROKER_TRANSPORT = "whatsapp_platform.lib.sqs_transport:Transport"
else:
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": SQS_VISIBILITY_TIMEOUT}

CELERY_TASK_DEFAULT_QUEUE = "analytics"
# Routes by task name, most specific first.
CELERY_TASK_ROUTES = {
    "webhooks.tasks.*": {"queue": "incoming"},
    "conversations.tasks.download_*": {"queue": "incoming"},
    "conversations.tasks.reply_*": {"queue": "ai"},
    "conversations.tasks.*": {"queue": "outgoing"},
    # Large audience imports are long bulk work that reads archive storage, like archival: kept
    # off the outgoing workers, whose slots send messages.
    "campaigns.tasks.import_audience_file": {"queue": "archival"},
    "campaigns.tasks.sweep_audience_imports": {"queue": "archival"},
    "campaigns.tasks.*": {"queue": "outgoing"},
    "archival.tasks.*": {"queue": "archival"},
    "whatsapp_platform.monitoring.tasks.*": {"queue": "analytics"},
}
CELERY_TASK_CREATE_MISSING_QUEUES = True
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_IGNORE_RESULT = True
CELERY_RESULT_BACKEND = None
# At least once: a message is acknowledged after its task finished, and comes back if the worker
# died. Tasks are idempotent through the database, so a second run is harmless.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
# A failed task is dead-lettered by PlatformTask; if even that fails, the message is left to
# SQS, whose redrive policy moves it to the dead-letter queue after SQS_MAX_RECEIVE_COUNT.
CELERY_TASK_ACKS_ON_FAILURE = False
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SOFT_TIME_LIMIT = env.int("CELERY_TASK_SOFT_TIME_LIMIT", default=300)
CELERY_TASK_TIME_LIMIT = env.int("CELERY_TASK_TIME_LIMIT", default=360)
# Celery holds countdown/ETA tasks unacknowledged in worker memory while SQS's visibility clock
# runs; past the timeout SQS delivers them a second time.
TASK_MAX_COUNTDOWN = min(900, SQS_VISIBILITY_TIMEOUT // 2)
CELERY_WORKER_SOFT_SHUTDOWN_TIMEOUT = 20
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_PUBLISH_RETRY_POLICY = {
    "max_retries": 2,
    "interval_start": 0,
    "interval_step": 0.2,
    "interval_max": 0.5,
}
# SQS and the filesystem broker have no broadcast: remote control and events stay off.
CELERY_WORKER_ENABLE_REMOTE_CONTROL = False
CELERY_WORKER_SEND_TASK_EVENTS = False
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_TIMEZONE = "UTC"
# How often beat runs the sweeps that recover work the broker lost (every minute by default).
SWEEP_INTERVAL_SECONDS = env.float("SWEEP_INTERVAL_SECONDS", default=60.0)
CELERY_BEAT_SCHEDULE: dict[str, dict[str, object]] = {
    # Beat and the analytics workers are alive: every minute.
    "heartbeat": {
        "task": "whatsapp_platform.tasks.record_heartbeat",
        "schedule": 60.0,
        "args": ("beat",),
    },
    # Webhook events and media downloads whose task never reached the broker: every minute.
    "requeue-stale-webhook-events": {
        "task": "webhooks.tasks.requeue_stale_events",
        "schedule": SWEEP_INTERVAL_SECONDS,
    },
    "requeue-pending-media": {
        "task": "conversations.tasks.requeue_pending_media",
        "schedule": SWEEP_INTERVAL_SECONDS,
    },
    # Scheduled campaigns whose time has come: every minute.
    "launch-due-campaigns": {
        "task": "campaigns.tasks.launch_due_campaigns",
        "schedule": 60.0,
    },
    # Sends whose task never reached the broker, and claimed ones whose worker died: every
    # minute.
    "sweep-sends": {
        "task": "conversations.tasks.sweep_sends",
        "schedule": SWEEP_INTERVAL_SECONDS,
    },
    # Unknown sends that no status webhook named within SEND_UNKNOWN_RESEND_AFTER_SECONDS, sent
    # again once: every minute.
    "resend-unreported-sends": {
        "task": "webhooks.tasks.resend_unreported_sends",
        "schedule": SWEEP_INTERVAL_SECONDS,
    },
    # Running campaigns whose fan-out stopped moving (a worker died): every minute.
    "restart-stalled-fanouts": {
        "task": "campaigns.tasks.restart_stalled_fanouts",
        "schedule": SWEEP_INTERVAL_SECONDS,
    },
    # Audience imports whose task was lost, or whose worker died for good, and stored audience
    # files no import will read: every ten minutes.
    "sweep-audience-imports": {
        "task": "campaigns.tasks.sweep_audience_imports",
        "schedule": 600.0,
    },
    # AI replies whose task was lost or whose worker died: every minute.
    "sweep-replies": {
        "task": "conversations.tasks.sweep_replies",
        "schedule": 60.0,
    },
    # Statuses for message ids that never showed up: daily.
    "prune-pending-statuses": {
        "task": "conversations.tasks.prune_pending_statuses",
        "schedule": 24 * 3600.0,
    },
    # Message templates and their approval status from the providers: daily at 03:15 UTC
    # (https://crontab.guru/#15_3_*_*_*).
    "sync-all-templates": {
        "task": "campaigns.tasks.sync_all_templates",
        "schedule": crontab(minute="15", hour="3"),
    },
    # Queue depths sampled for the dashboard, and the active alerts logged: every minute.
    "evaluate-alerts": {
        "task": "whatsapp_platform.monitoring.tasks.evaluate_alerts",
        "schedule": 60.0,
    },
}

# --- Providers and webhooks ------------------------------------------------------------------
META_GRAPH_API_BASE_URL = env.str("META_GRAPH_API_BASE_URL", default="https://graph.facebook.com")
META_GRAPH_API_VERSION = env.str("META_GRAPH_API_VERSION", default="v26.0")
TWILIO_API_BASE_URL = env.str("TWILIO_API_BASE_URL", default="https://api.twilio.com")
TWILIO_CONTENT_API_BASE_URL = env.str(
    "TWILIO_CONTENT_API_BASE_URL", default="https://content.twilio.com"
)
# Seconds to connect to, and then to wait for an answer from, a provider's API.
PROVIDER_CONNECT_TIMEOUT = env.float("PROVIDER_CONNECT_TIMEOUT", default=5.0)
PROVIDER_READ_TIMEOUT = env.float("PROVIDER_READ_TIMEOUT", default=15.0)
# Meta sends up to 1,000 updates and 3 MB in one POST.
WEBHOOK_MAX_BODY_BYTES = 4 * 1024 * 1024
DATA_UPLOAD_MAX_MEMORY_SIZE = WEBHOOK_MAX_BODY_BYTES
# A failed webhook event is retried with exponential back-off, then dead-lettered.
WEBHOOK_PROCESS_MAX_RETRIES = env.int("WEBHOOK_PROCESS_MAX_RETRIES", default=5)
WEBHOOK_PROCESS_RETRY_BACKOFF = env.int("WEBHOOK_PROCESS_RETRY_BACKOFF", default=2)
# An event still `queued` this long after it was enqueued is enqueued again (a lost publish).
WEBHOOK_REQUEUE_AFTER_SECONDS = env.int("WEBHOOK_REQUEUE_AFTER_SECONDS", default=900)
# Whole-message keywords (any case) that opt a contact out of, or back into, messages.
OPT_OUT_KEYWORDS = [
    w.upper() for w in env.list("OPT_OUT_KEYWORDS", default=["STOP", "UNSUBSCRIBE"])
]
OPT_IN_KEYWORDS = [w.upper() for w in env.list("OPT_IN_KEYWORDS", default=["START"])]

# --- Sending --------------------------------------------------------------------------------
# Campaigns use at most this share of a channel's messages-per-second while other sends (API,
# AI replies) flow, so those still go out during a large campaign.
CAMPAIGN_RATE_SHARE = env.float("CAMPAIGN_RATE_SHARE", default=0.8)
# Retryable provider errors are retried with exponential back-off and jitter, this many times.
MESSAGE_SEND_MAX_RETRIES = env.int("MESSAGE_SEND_MAX_RETRIES", default=5)
MESSAGE_SEND_RETRY_BACKOFF = env.float("MESSAGE_SEND_RETRY_BACKOFF", default=2.0)
# Meta's pair rate limit: about one message every 6 seconds to the same user.
PAIR_RATE_SECONDS = env.float("PAIR_RATE_SECONDS", default=6.0)
# At most one marketing template per contact in this many hours, across all campaigns.
MARKETING_FREQUENCY_CAP_HOURS = env.int("MARKETING_FREQUENCY_CAP_HOURS", default=24)
# Chunk senders that work through one campaign's audience in parallel (one worker slot each).
CAMPAIGN_FANOUT_SENDERS = env.int("CAMPAIGN_FANOUT_SENDERS", default=4)
# A message still `queued` this long after its task was due is enqueued again (a lost publish).
MESSAGE_REQUEUE_AFTER_SECONDS = env.int("MESSAGE_REQUEUE_AFTER_SECONDS", default=60)
# A message `sending` for longer than a task may run was claimed by a worker that died: its
# outcome is unknown, and it is reconciled from the status webhooks (or sent again, below).
MESSAGE_SEND_LEASE_SECONDS = env.int(
    "MESSAGE_SEND_LEASE_SECONDS", default=CELERY_TASK_TIME_LIMIT + 60
)
# Meta and Twilio report every message they accept with a status webhook that names our message
# id. A send whose outcome is unknown and that no status has named this long after its call
# (and after every webhook received by then is processed) never reached the provider: it is
# sent again, once. Longer is safer against provider webhooks that come late; shorter reaches
# those recipients sooner.
SEND_UNKNOWN_RESEND_AFTER_SECONDS = env.int("SEND_UNKNOWN_RESEND_AFTER_SECONDS", default=300)
# Provider calls one worker process has in flight at once, for all its sends (threads are
# started as needed): a channel's rate times the provider's answer time, plus the calls waiting
# for their slots (1,000/s at 50 ms needs about 70; at 300 ms about 320).
MESSAGE_SEND_CONCURRENCY = env.int("MESSAGE_SEND_CONCURRENCY", default=400)

# --- Archive storage --------------------------------------------------------------------------
ARCHIVE_S3_BUCKET = env.str("ARCHIVE_S3_BUCKET", default="")
S3_ENDPOINT_URL = env.str("S3_ENDPOINT_URL", default="") or None
ARCHIVE_LOCAL_DIR = Path(env.str("ARCHIVE_LOCAL_DIR", default=str(VAR_DIR / "archive")))

# --- Archival ---------------------------------------------------------------------------------
# Messages and webhook events older than this go to the archive (an organization may set its
# own); media older than MEDIA_THRESHOLD_DAYS is copied to archived-media/.
ARCHIVE_THRESHOLD_DAYS = env.int("ARCHIVE_THRESHOLD_DAYS", default=90)
MEDIA_THRESHOLD_DAYS = env.int("MEDIA_THRESHOLD_DAYS", default=30)
ARCHIVE_BATCH_SIZE = env.int("ARCHIVE_BATCH_SIZE", default=5000)
ARCHIVE_GZIP_LEVEL = env.int("ARCHIVE_GZIP_LEVEL", default=6)
# S3 lifecycle: archive objects expire after this many years.
ARCHIVE_RETENTION_YEARS = env.int("ARCHIVE_RETENTION_YEARS", default=7)
# The periodic runs: a daily cron (UTC) that acts only every ARCHIVE_EVERY_DAYS days, counted
# from 1970-01-01, so that "every two days" stays 48 hours apart across month ends.
ARCHIVE_MESSAGES_CRON = env.str("ARCHIVE_MESSAGES_CRON", default="0 2 * * *")
ARCHIVE_MEDIA_CRON = env.str("ARCHIVE_MEDIA_CRON", default="0 3 * * *")
ARCHIVE_EVERY_DAYS = env.int("ARCHIVE_EVERY_DAYS", default=2)
# One archival task works this long, then hands the rest of its run to a fresh task.
ARCHIVE_TASK_BUDGET_SECONDS = env.int(
    "ARCHIVE_TASK_BUDGET_SECONDS", default=max(5, CELERY_TASK_SOFT_TIME_LIMIT * 2 // 3)
)
# Fault injection for crash tests: a run stops, alive but idle, after this many uploads and
# before their rows are deleted. Never set in production.
ARCHIVE_PAUSE_AFTER_UPLOADS = env.int("ARCHIVE_PAUSE_AFTER_UPLOADS", default=0)

# --- Logging ----------------------------------------------------------------------------------
LOG_LEVEL = env.str("LOG_LEVEL", default="INFO").upper()
# `json`: one object per line, with the correlation id; `plain` for reading in a terminal.
LOG_FORMAT = env.str("LOG_FORMAT", default="json")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        # Phone numbers, message text and secrets never reach a log line.
        "redact": {"()": "whatsapp_platform.monitoring.logs.RedactFilter"},
        "correlation": {"()": "whatsapp_platform.monitoring.logs.CorrelationIdFilter"},
    },
    "formatters": {
        "plain": {
            "()": "whatsapp_platform.monitoring.logs.PlainFormatter",
            "format": "%(asctime)s %(levelname)s %(name)s [%(correlation_id)s] %(message)s",
        },
        "json": {"()": "whatsapp_platform.monitoring.logs.JsonFormatter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "json" if LOG_FORMAT == "json" else "plain",
            "filters": ["correlation", "redact"],
        },
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        "botocore": {"level": "WARNING"},
        "urllib3": {"level": "WARNING"},
        # twilio-python logs every request's URL and headers at INFO.
        "twilio": {"level": "WARNING"},
        # The openai library's HTTP client logs every request at INFO.
        "httpx2": {"level": "WARNING"},
        "openai": {"level": "WARNING"},
        # A worker's start-up and "ready" lines, whatever LOG_LEVEL: supervisors wait for them.
        "celery.apps.worker": {"level": "INFO"},
    },
}

# --- Operations: metrics, alerts, heartbeats ------------------------------------------------
# Every process (gunicorn workers, Celery pool processes) writes its metrics to files here, and
# a scrape sums them. It must be set before prometheus_client is first imported.
PROMETHEUS_MULTIPROC_DIR = env.str("PROMETHEUS_MULTIPROC_DIR", default=str(VAR_DIR / "prometheus"))
os.environ["PROMETHEUS_MULTIPROC_DIR"] = PROMETHEUS_MULTIPROC_DIR
Path(PROMETHEUS_MULTIPROC_DIR).mkdir(parents=True, exist_ok=True)
# Web and workers on one host share the folder, and /monitoring/metrics shows both. Workers on
# other hosts serve their own metrics on this port when it is set (0: off).
WORKER_METRICS_PORT = env.int("WORKER_METRICS_PORT", default=0)
# When set, /monitoring/metrics, summary and alerts need `Authorization: Bearer <token>`.
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")
# Alert thresholds.
ALERT_QUEUE_DEPTH = env.int("ALERT_QUEUE_DEPTH", default=100)
ALERT_DEAD_LETTERS = env.int("ALERT_DEAD_LETTERS", default=0)
ALERT_TASK_ERRORS = env.int("ALERT_TASK_ERRORS", default=5)
ALERT_TASK_ERRORS_WINDOW_SECONDS = env.int("ALERT_TASK_ERRORS_WINDOW_SECONDS", default=300)
ALERT_ARCHIVE_MAX_SECONDS = env.int("ALERT_ARCHIVE_MAX_SECONDS", default=600)
# Each worker records a heartbeat per queue it consumes this often; one older than three
# intervals is a worker gone. Beat's own heartbeat is sent every minute.
WORKER_HEARTBEAT_SECONDS = env.int("WORKER_HEARTBEAT_SECONDS", default=30)
BEAT_HEARTBEAT_STALE_SECONDS = env.int("BEAT_HEARTBEAT_STALE_SECONDS", default=180)
# Client analytics events accepted in one request.
ANALYTICS_MAX_EVENTS = 100

# --- AI replies -----------------------------------------------------------------------------
# The openai library reads both from the environment as well; without a key AI replies are off.
OPENAI_API_KEY = env.str("OPENAI_API_KEY", default="")
OPENAI_BASE_URL = env.str("OPENAI_BASE_URL", default="") or None
# Seconds to wait for one Responses API call, and attempts before the fallback text is sent.
OPENAI_TIMEOUT = env.float("OPENAI_TIMEOUT", default=60.0)
AI_REPLY_MAX_RETRIES = env.int("AI_REPLY_MAX_RETRIES", default=3)
AI_REPLY_RETRY_BACKOFF = env.float("AI_REPLY_RETRY_BACKOFF", default=5.0)
# Tokens (input and output) each organization may spend a calendar month; 0 is no limit.
AI_MONTHLY_TOKEN_BUDGET = env.int("AI_MONTHLY_TOKEN_BUDGET", default=0)

# --- Campaigns ------------------------------------------------------------------------------
# The largest audience CSV accepted (about 50 bytes a row: 1,000,000 rows).
CAMPAIGN_AUDIENCE_MAX_BYTES = env.int("CAMPAIGN_AUDIENCE_MAX_BYTES", default=50 * 1024 * 1024)
# Files up to this size are imported within the request and answered with the report (about
# 20,000 rows, a second or two); larger ones are stored and imported by a worker.
CAMPAIGN_AUDIENCE_INLINE_MAX_BYTES = env.int(
    "CAMPAIGN_AUDIENCE_INLINE_MAX_BYTES", default=1024 * 1024
)
# A background import's time limit: a file of CAMPAIGN_AUDIENCE_MAX_BYTES takes a few minutes.
# It stays below SQS_VISIBILITY_TIMEOUT, or SQS would hand the running import to a second worker.
CAMPAIGN_AUDIENCE_IMPORT_TIME_LIMIT = env.int(
    "CAMPAIGN_AUDIENCE_IMPORT_TIME_LIMIT",
    default=max(CELERY_TASK_TIME_LIMIT, min(1200, SQS_VISIBILITY_TIMEOUT * 2 // 3)),
)
# An import still queued or running this long after its last change lost its task: the sweeper
# sends it again, and after CAMPAIGN_AUDIENCE_IMPORT_MAX_ATTEMPTS runs marks it failed.
CAMPAIGN_AUDIENCE_IMPORT_REQUEUE_AFTER_SECONDS = env.int(
    "CAMPAIGN_AUDIENCE_IMPORT_REQUEUE_AFTER_SECONDS",
    default=SQS_VISIBILITY_TIMEOUT + CAMPAIGN_AUDIENCE_IMPORT_TIME_LIMIT,
)
CAMPAIGN_AUDIENCE_IMPORT_MAX_ATTEMPTS = env.int("CAMPAIGN_AUDIENCE_IMPORT_MAX_ATTEMPTS", default=3)
