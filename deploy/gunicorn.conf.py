"""gunicorn settings of the web process: `gunicorn -c deploy/gunicorn.conf.py whatsapp_platform.wsgi`.

A webhook request spends most of its time waiting for its group commit (webhooks/writer.py), not
on the CPU, so each worker runs more threads than cores: every waiting thread is one more
delivery in the next commit. WEB_CONCURRENCY sets the processes (about one per core).
"""

import os

# Prometheus multiprocess mode: dead processes' files are dropped at start and as they exit.
from whatsapp_platform.monitoring.gunicorn_config import child_exit, on_starting

bind = os.environ.get("BIND", "127.0.0.1:8000")
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_class = "gthread"
threads = int(os.environ.get("WEB_THREADS", "8"))

# Meta and Twilio give up on a webhook after about 10 to 15 seconds and deliver it again; a request
# still running at 30 s is stuck, and its worker is restarted.
timeout = int(os.environ.get("WEB_TIMEOUT", "30"))
# On a deploy or restart, requests in flight finish first (each answers within milliseconds).
graceful_timeout = 20
# Providers and load balancers reuse connections: keep them open longer than an ALB's idle
# timeout (60 s) would cut them from the other side.
keepalive = int(os.environ.get("WEB_KEEPALIVE", "75"))
# Recycle workers now and then, staggered, so a slow leak never grows unbounded.
max_requests = int(os.environ.get("WEB_MAX_REQUESTS", "20000"))
max_requests_jitter = max_requests // 10
# TLS ends at the proxy or load balancer in front; X-Forwarded-Proto is trusted from it only.
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1,::1")

# Access log without the query string: Meta's verification handshake carries the verify token in
# it (`hub.verify_token`), and no secret goes to the logs.
accesslog = os.environ.get("WEB_ACCESS_LOG", "-")
access_log_format = '%(h)s "%(m)s %(U)s %(H)s" %(s)s %(B)s %(M)sms'
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info").lower()


def worker_exit(server: object, worker: object) -> None:
    """A worker recycled or stopped first hands its stored events to the broker: otherwise those
    still waiting in the dispatcher's linger would wait for the sweeper."""
    from webhooks.dispatch import dispatcher

    dispatcher.wait_idle(timeout=10)


__all__ = ["child_exit", "on_starting", "worker_exit"]
