"""The Celery app of test_celery.py, shared by the test (the client that sends tasks and reads
their results) and the worker subprocesses it starts (`celery -A celery_app worker`).

`make_app` builds it from explicit settings; the worker builds the same app from the WARREN_CELERY_*
environment variables that `worker_env` sets, so both sides declare the task queue with the same
arguments (a mismatch would be a 406 on the second declare).

Tasks leave a trace in a file that the test reads: `record` appends one line per execution, so a
test can count executions (redeliveries that run a task twice show up there even when the second
result is lost)."""

import os
import time

from celery import Celery
from kombu import Queue

BROKER_ENV = "WARREN_CELERY_BROKER"
QUEUE_ENV = "WARREN_CELERY_QUEUE"
CONSUMER_TIMEOUT_ENV = "WARREN_CELERY_CONSUMER_TIMEOUT_MS"


def worker_env(broker_url: str, queue: str, consumer_timeout_ms: int | None = None) -> dict:
    """Environment variables for a worker that builds the same app as make_app(...)."""
    env = {BROKER_ENV: broker_url, QUEUE_ENV: queue}
    if consumer_timeout_ms is not None:
        env[CONSUMER_TIMEOUT_ENV] = str(consumer_timeout_ms)
    return env


def make_app(broker_url: str, queue: str, consumer_timeout_ms: int | None = None) -> Celery:
    app = Celery("warren_interop", broker=broker_url, backend="rpc://", set_as_current=False)
    arguments = {"x-consumer-timeout": consumer_timeout_ms} if consumer_timeout_ms is not None else None
    app.conf.update(
        # One queue per test (unique name), reached through the default exchange, so that nothing
        # else is declared on a shared broker (WARREN_TEST_EXTERNAL_PORT).
        task_queues=[Queue(queue, exchange="", routing_key=queue, queue_arguments=arguments)],
        task_default_queue=queue,
        task_default_exchange="",
        task_default_routing_key=queue,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        # A worker reserves as few tasks as it can: prefetch = concurrency * 1.
        worker_prefetch_multiplier=1,
        # No pidbox (remote control) or event exchanges and queues: only the task queue and the
        # rpc:// reply queue.
        worker_enable_remote_control=False,
        worker_send_task_events=False,
        task_send_sent_event=False,
        # Bounded everywhere: a broker that does not answer fails the test instead of hanging it.
        broker_connection_timeout=5,
        broker_connection_retry_on_startup=False,
        broker_connection_max_retries=3,
        task_publish_retry_policy={"max_retries": 2, "interval_start": 0, "interval_step": 0.2},
    )

    def trace(path: str, label: str) -> int:
        """Appends `label pid time` to path; returns how many times label ran before."""
        with open(path, "a+") as f:
            f.seek(0)
            before = sum(1 for line in f if line.split(" ", 1)[0] == label)
            f.write(f"{label} {os.getpid()} {time.time():.3f}\n")
            f.flush()
        return before

    @app.task(name="warren_interop.record")
    def record(path: str, label: str, sleep_first: float = 0.0) -> str:
        """Records one execution of `label`; the first execution then sleeps `sleep_first` s."""
        if trace(path, label) == 0 and sleep_first:
            time.sleep(sleep_first)
        return label

    @app.task(name="warren_interop.record_late", acks_late=True)
    def record_late(path: str, label: str, sleep_first: float = 0.0) -> str:
        """As `record`, acknowledged only after it returns (acks_late)."""
        if trace(path, label) == 0 and sleep_first:
            time.sleep(sleep_first)
        return label

    app.record = record
    app.record_late = record_late
    return app


# What `celery -A celery_app worker` loads; importing this module in the test (no environment)
# builds nothing.
if os.environ.get(BROKER_ENV):
    app = make_app(
        os.environ[BROKER_ENV],
        os.environ[QUEUE_ENV],
        int(os.environ[CONSUMER_TIMEOUT_ENV]) if os.environ.get(CONSUMER_TIMEOUT_ENV) else None,
    )
