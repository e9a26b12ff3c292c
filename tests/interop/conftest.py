"""Fixtures for the pika interop tests: the real `warren` binary, run as a child process.

Every test gets its own broker on a free loopback port with a temporary --data-dir. Teardown sends
SIGTERM and asserts the broker exits 0 within 10 s, so every test also checks graceful shutdown.

WARREN_BIN names the binary (default: target/debug/warren under the repository root).

WARREN_TEST_EXTERNAL_PORT=<port> runs the suite against a broker that is already listening on
127.0.0.1:<port> (say a RabbitMQ, to check that the tests expect what RabbitMQ does): the `warren`
fixture then starts nothing and yields an ExternalBroker, tests marked `warren_only` and tests that
need a broker process of their own (`start_broker`) are skipped. Such a broker is shared by every
test, so tests must use unique names (the `names` fixture) and clean up after themselves.

Helpers for the AMQP tests: `connect` (connections closed at teardown), `channel`, `pump` (run the
I/O loop until a condition holds, instead of sleeping), `inbox` (a consumer callback that records
deliveries), `drain` (basic.get until empty), `fill` (publish with confirms, so messages are in the
queue on return) and `queue_state` (message and consumer counts, or None when missing).
"""

import contextlib
import os
import pathlib
import signal
import socket
import subprocess
import time
import uuid

import pika
import pika.exceptions
import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
EXTERNAL_PORT = os.environ.get("WARREN_TEST_EXTERNAL_PORT")
START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0


def warren_bin() -> pathlib.Path:
    configured = os.environ.get("WARREN_BIN")
    path = pathlib.Path(configured) if configured else REPO_ROOT / "target" / "debug" / "warren"
    path = path.resolve()
    if not os.access(path, os.X_OK):
        pytest.fail(f"broker binary {path} is missing or not executable (build it or set WARREN_BIN)")
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class Broker:
    """One running broker process."""

    def __init__(self, process: subprocess.Popen, port: int, log_path: pathlib.Path):
        self.process = process
        self.port = port
        self.log_path = log_path

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def params(self, **kwargs) -> pika.ConnectionParameters:
        """Connection parameters for this broker (guest/guest, vhost "/" unless overridden).

        Timeouts are bounded so that a broker that stops answering fails a test instead of
        hanging it.
        """
        kwargs.setdefault("socket_timeout", 5)
        kwargs.setdefault("stack_timeout", 10)
        kwargs.setdefault("blocked_connection_timeout", 10)
        kwargs.setdefault("connection_attempts", 1)
        return pika.ConnectionParameters(host="127.0.0.1", port=self.port, **kwargs)

    def connect(self, **kwargs) -> pika.BlockingConnection:
        return pika.BlockingConnection(self.params(**kwargs))

    def terminate(self) -> int:
        """Sends SIGTERM and returns the exit code; fails the test if the broker takes more than
        STOP_TIMEOUT seconds (and then kills it)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            pytest.fail(
                f"broker did not exit within {STOP_TIMEOUT:.0f} s of SIGTERM\n--- broker log ---\n{self.log()}"
            )

    def assert_graceful_exit(self) -> None:
        code = self.terminate()
        assert code == 0, f"broker exited with {code} after SIGTERM\n--- broker log ---\n{self.log()}"


def _spawn(data_dir: pathlib.Path, log_path: pathlib.Path, extra_args=()) -> Broker:
    binary = warren_bin()
    port = free_port()
    log = open(log_path, "wb")
    try:
        process = subprocess.Popen(
            [str(binary), "--listen", f"127.0.0.1:{port}", "--data-dir", str(data_dir),
             *(() if "--management" in extra_args else ("--management", "off")), *extra_args],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "info")},
        )
    finally:
        log.close()
    broker = Broker(process, port, log_path)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return broker  # exited early; the caller decides whether to retry
        if port_accepts(port):
            return broker
        time.sleep(0.05)
    process.kill()
    process.wait()
    pytest.fail(f"broker did not accept on port {port} within {START_TIMEOUT:.0f} s\n{broker.log()}")


@contextlib.contextmanager
def running_broker(tmp_path: pathlib.Path, extra_args=()):
    """Starts a broker (with `extra_args` on its command line, e.g. a --config), yields it, then
    stops it with SIGTERM and asserts a clean exit 0.

    The free port is picked before the broker binds it, so another process can take it in
    between; a broker that exits at start-up is retried on a new port a few times."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    broker = None
    for attempt in range(3):
        data_dir = tmp_path / f"data-{attempt}"
        broker = _spawn(data_dir, tmp_path / f"warren-{attempt}.log", extra_args)
        if broker.process.poll() is None:
            break
    assert broker is not None and broker.process.poll() is None, (
        f"broker exited at start-up with {broker.process.returncode}\n{broker.log()}"
    )
    assert data_dir.is_dir(), "broker did not create its --data-dir"
    try:
        yield broker
    except BaseException:
        if broker.process.poll() is None:
            broker.process.kill()
            broker.process.wait()
        raise
    broker.assert_graceful_exit()


class ExternalBroker(Broker):
    """A broker this suite did not start (WARREN_TEST_EXTERNAL_PORT): no process, no log."""

    def __init__(self, port: int):
        self.process = None
        self.port = port
        self.log_path = None

    def log(self) -> str:
        return ""

    def terminate(self) -> int:
        pytest.fail("an external broker cannot be stopped by the test suite")


def external_broker() -> ExternalBroker:
    port = int(EXTERNAL_PORT)
    if not port_accepts(port):
        pytest.fail(f"WARREN_TEST_EXTERNAL_PORT={port}: nothing accepts on 127.0.0.1:{port}")
    return ExternalBroker(port)


@pytest.fixture
def warren(tmp_path):
    """A running broker (a Broker object: .port, .params(), .connect(), .log())."""
    if EXTERNAL_PORT:
        yield external_broker()
        return
    with running_broker(tmp_path) as broker:
        yield broker


@pytest.fixture
def warren_port(warren):
    """The loopback port of a running broker."""
    yield warren.port


@pytest.fixture
def start_broker(tmp_path):
    """For tests that need their own broker (e.g. to stop it themselves): a context manager."""
    if EXTERNAL_PORT:
        pytest.skip("needs a broker process of its own (WARREN_TEST_EXTERNAL_PORT is set)")
    counter = iter(range(1000))

    def start():
        return running_broker(tmp_path / f"broker-{next(counter)}")

    return start


TEST_TIMEOUT = 60


@pytest.fixture(autouse=True)
def _test_deadline(request):
    """Fails a test that runs longer than TEST_TIMEOUT seconds instead of letting it hang CI: a
    broker that never answers (say, no close-ok) would otherwise block pika's I/O loop forever.
    SIGALRM interrupts pika's select() in the main thread and the handler's exception ends it.
    `@pytest.mark.deadline(seconds)` (on a test or a module's pytestmark) sets a shorter limit."""
    marker = request.node.get_closest_marker("deadline")
    seconds = int(marker.args[0]) if marker else TEST_TIMEOUT

    def expired(_signum, _frame):
        raise TimeoutError(f"test did not finish within {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def pytest_runtest_setup(item):
    if EXTERNAL_PORT and item.get_closest_marker("warren_only"):
        pytest.skip("checks Warren-only behaviour (WARREN_TEST_EXTERNAL_PORT is set)")


class Names:
    """Unique queue and exchange names for one test, deleted again at teardown when the broker is
    shared (WARREN_TEST_EXTERNAL_PORT); a broker started for the test just goes away."""

    def __init__(self, broker: Broker, test_name: str):
        self.broker = broker
        self.prefix = "warren-it-" + "".join(c if c.isalnum() else "-" for c in test_name)[:60]
        self.queues: list[str] = []
        self.exchanges: list[str] = []

    def _unique(self, label: str) -> str:
        return f"{self.prefix}-{label}-{uuid.uuid4().hex[:10]}"

    def queue(self, label: str = "q") -> str:
        return self.track_queue(self._unique(label))

    def exchange(self, label: str = "x") -> str:
        return self.track_exchange(self._unique(label))

    def track_queue(self, name: str) -> str:
        """For names the broker chose (server-named queues)."""
        self.queues.append(name)
        return name

    def track_exchange(self, name: str) -> str:
        self.exchanges.append(name)
        return name

    def cleanup(self) -> None:
        if not (self.queues or self.exchanges):
            return
        conn = self.broker.connect()
        try:
            ch = conn.channel()
            deletions = [("queue_delete", q) for q in self.queues]
            deletions += [("exchange_delete", x) for x in self.exchanges]
            for method, name in deletions:
                try:
                    getattr(ch, method)(name)
                except pika.exceptions.ChannelClosedByBroker:
                    # Say 405 for another connection's exclusive queue (it goes away with that
                    # connection) or 404 on older brokers; the next deletion needs a new channel.
                    ch = conn.channel()
        finally:
            if conn.is_open:
                conn.close()


@pytest.fixture
def names(request, warren):
    """Unique names for queues and exchanges (`names.queue()`, `names.exchange()`); against a shared
    broker they are deleted after the test."""
    tracker = Names(warren, request.node.name)
    yield tracker
    if EXTERNAL_PORT:
        tracker.cleanup()


@pytest.fixture
def connect(warren):
    """Opens a BlockingConnection to the broker (keyword arguments as for `Broker.params`); those
    still open at teardown are closed. A connection whose socket a test broke is left alone."""
    opened: list[pika.BlockingConnection] = []

    def open_connection(**kwargs) -> pika.BlockingConnection:
        conn = warren.connect(**kwargs)
        opened.append(conn)
        return conn

    yield open_connection
    for conn in opened:
        if conn.is_open and not getattr(conn, "_warren_test_broken", False):
            try:
                conn.close()
            except (pika.exceptions.AMQPError, OSError):
                pass


@pytest.fixture
def channel(connect):
    """A channel on a connection of its own."""
    return connect().channel()


def _pump(conns, until, timeout: float) -> bool:
    if isinstance(conns, pika.BlockingConnection):
        conns = [conns]
    deadline = time.monotonic() + timeout
    while not until():
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        # With several connections, take turns in short slices so each one's I/O runs.
        slice_ = min(left, 0.02 if len(conns) > 1 else 0.05)
        for conn in conns:
            conn.process_data_events(time_limit=slice_)
    return True


@pytest.fixture
def pump():
    """`pump(conns, until=predicate, timeout=seconds)`: runs the I/O loop of one connection or a
    list of them (dispatching deliveries, returns and cancels to their callbacks) until the
    predicate holds or the timeout passes; returns whether it held. `until=lambda: False` just
    waits out the timeout, to show that nothing (more) arrives."""

    def run(conns, until=lambda: False, timeout: float = 5.0) -> bool:
        return _pump(conns, until, timeout)

    return run


class Delivery:
    """One message as a consumer or basic.get saw it."""

    def __init__(self, method, properties, body: bytes):
        self.method = method
        self.properties = properties
        self.body = body

    @property
    def tag(self) -> int:
        return self.method.delivery_tag

    @property
    def redelivered(self) -> bool:
        return self.method.redelivered

    def __repr__(self) -> str:
        return f"Delivery(tag={self.tag}, redelivered={self.redelivered}, body={self.body[:40]!r})"


class Inbox(list):
    """What one consumer received, in order: a list of Delivery, usable as on_message_callback."""

    def __call__(self, _channel, method, properties, body):
        self.append(Delivery(method, properties, body))

    def bodies(self) -> list[bytes]:
        return [d.body for d in self]


@pytest.fixture
def inbox():
    """`inbox()` makes a new Inbox: pass it as on_message_callback, read it as a list."""
    return Inbox


@pytest.fixture
def drain():
    """`drain(channel, queue, auto_ack=True)`: basic.get until get-empty; returns the Deliveries."""

    def get_all(ch, queue: str, auto_ack: bool = True, limit: int = 10_000) -> list[Delivery]:
        got = []
        for _ in range(limit):
            method, properties, body = ch.basic_get(queue, auto_ack=auto_ack)
            if method is None:
                return got
            got.append(Delivery(method, properties, body))
        raise AssertionError(f"queue {queue} did not run empty after {limit} messages")

    return get_all


@pytest.fixture
def fill():
    """`fill(conn, queue, bodies)`: publishes each body to `queue` through the default exchange on
    a confirm channel of its own and waits for every confirm, so the messages are in the queue (in
    this order) when it returns."""

    def publish_all(conn: pika.BlockingConnection, queue: str, bodies) -> None:
        ch = conn.channel()
        ch.confirm_delivery()
        for body in bodies:
            ch.basic_publish("", queue, body, mandatory=True)
        ch.close()

    return publish_all


@pytest.fixture
def queue_state():
    """`queue_state(conn, queue)`: (message_count, consumer_count) from a passive declare on a
    channel of its own, or None when the queue does not exist (404)."""

    def state(conn: pika.BlockingConnection, queue: str):
        ch = conn.channel()
        try:
            ok = ch.queue_declare(queue, passive=True).method
        except pika.exceptions.ChannelClosedByBroker as e:
            if e.reply_code == 404:
                return None
            raise
        ch.close()
        return ok.message_count, ok.consumer_count

    return state


# WARREN_TEST_DURABLE=1 runs the suite with queues durable and messages persistent unless a test
# says otherwise: the routing semantics must hold with the message store in the path too.
if os.environ.get("WARREN_TEST_DURABLE"):
    import pika.channel
    import pika.spec

    _queue_declare = pika.channel.Channel.queue_declare
    _basic_publish = pika.channel.Channel.basic_publish

    def _durable_queue_declare(self, queue, *args, **kwargs):
        if len(args) < 2 and "durable" not in kwargs:
            kwargs["durable"] = True
        return _queue_declare(self, queue, *args, **kwargs)

    def _persistent_basic_publish(self, exchange, routing_key, body, properties=None, *args, **kwargs):
        properties = properties or pika.spec.BasicProperties()
        if properties.delivery_mode is None:
            properties.delivery_mode = 2
        return _basic_publish(self, exchange, routing_key, body, properties, *args, **kwargs)

    pika.channel.Channel.queue_declare = _durable_queue_declare
    pika.channel.Channel.basic_publish = _persistent_basic_publish

    def pytest_collection_modifyitems(config, items):
        # It checks that properties left unset arrive unset, which the persistent default changes.
        skip = pytest.mark.skip(reason="checks unset properties (WARREN_TEST_DURABLE sets delivery_mode)")
        for item in items:
            if "all_properties_and_nested_headers_round_trip" in item.name:
                item.add_marker(skip)
