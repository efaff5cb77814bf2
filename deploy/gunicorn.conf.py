"""gunicorn settings of the web process: `gunicorn -c deploy/gunicorn.conf.py whatsapp_platform.wsgi`.

A webhook request spends most of its time waiting for its group commit (webhooks/writer.py), not
on the CPU, so each worker runs more threads than cores: every waiting thread is one more
delivery in the next commit. WEB_CONCURRENCY sets the processes (about one per core).
"""

import os

bind = os.environ.get("BIND", "127.0.0.1:8000")
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_class = "gthread"
threads = int(os.environ.get("WEB_THREADS", "8"))
