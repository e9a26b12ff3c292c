"""The web dashboard end to end: the real broker binary, pika clients making traffic, and headless
Chromium (Debian's /usr/bin/chromium, driven by Playwright) clicking through the pages.

One broker and one browser page serve the whole module; the tests run in file order and each
starts from its own URL. Every wait is explicit (a selector, a condition) and bounded.

WARREN_BIN names the broker binary (default target/debug/warren), CHROMIUM the browser
(default /usr/bin/chromium). WARREN_DASHBOARD_SCREENSHOT names where the overview's screenshot
goes (default: the test's temporary directory); the README's is made with
`WARREN_DASHBOARD_SCREENSHOT=docs/dashboard.png pytest tests/dashboard`.
"""

import base64
import json
import os
import pathlib
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import pika
import pika.exceptions
import pytest
from PIL import Image
from playwright.sync_api import expect, sync_playwright

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
WAIT_MS = 30_000  # the longest any one wait may take
VIEWPORT = {"width": 1280, "height": 800}
expect.set_options(timeout=WAIT_MS)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_until(condition, timeout=WAIT_MS / 1000, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.2)


class Broker:
    """The broker process and a small client of its API."""

    def __init__(self, tmp: pathlib.Path):
        binary = pathlib.Path(os.environ.get("WARREN_BIN", REPO_ROOT / "target" / "debug" / "warren"))
        if not os.access(binary, os.X_OK):
            pytest.fail(f"broker binary {binary} is missing (build it or set WARREN_BIN)")
        self.port, self.http_port = free_port(), free_port()
        self.log_path = tmp / "warren.log"
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [str(binary), "--listen", f"127.0.0.1:{self.port}",
                 "--management", f"127.0.0.1:{self.http_port}", "--data-dir", str(tmp / "data")],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            )
        self.url = f"http://127.0.0.1:{self.http_port}"

    def wait_ready(self):
        wait_until(lambda: self.process.poll() is not None
                   or (port_accepts(self.port) and port_accepts(self.http_port)),
                   timeout=10, what="the broker's ports")
        assert self.process.poll() is None, f"broker exited at start-up\n{self.log()}"

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def connect(self, name: str) -> pika.BlockingConnection:
        return pika.BlockingConnection(pika.ConnectionParameters(
            host="127.0.0.1", port=self.port, socket_timeout=5, stack_timeout=10,
            blocked_connection_timeout=10, connection_attempts=1,
            client_properties={"connection_name": name},
        ))

    def api(self, method: str, path: str, body=None, user=("guest", "guest")):
        """(status, decoded JSON or None)."""
        request = urllib.request.Request(
            self.url + path, method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": "Basic " + base64.b64encode(":".join(user).encode()).decode(),
                     "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                text = response.read()
                return response.status, json.loads(text) if text else None
        except urllib.error.HTTPError as e:
            return e.code, None


class Traffic:
    """A publisher (with confirms, into dash-orders and dash-work) and a consumer (acking from
    dash-work) on threads of their own, so every rate on the overview moves."""

    def __init__(self, broker: Broker):
        self.broker = broker
        self.stop = threading.Event()
        self.errors = []
        self.threads = [threading.Thread(target=self._guard, args=(f,), daemon=True)
                        for f in (self._publish, self._consume)]

    def start(self):
        for thread in self.threads:
            thread.start()

    def join(self):
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=10)

    def _guard(self, work):
        try:
            work()
        except Exception as e:  # reported by the test that needs the traffic
            self.errors.append(e)

    def _publish(self):
        connection = self.broker.connect("dash-publisher")
        channel = connection.channel()
        channel.confirm_delivery()
        while not self.stop.is_set():
            for queue in ("dash-orders", "dash-work", "dash-work"):
                channel.basic_publish("", queue, b'{"order": 1}')
            time.sleep(0.01)
        connection.close()

    def _consume(self):
        connection = self.broker.connect("dash-consumer")
        channel = connection.channel()
        channel.basic_qos(prefetch_count=50)
        channel.basic_consume("dash-work", lambda ch, method, _p, _b: ch.basic_ack(method.delivery_tag))
        while not self.stop.is_set():
            connection.process_data_events(time_limit=0.2)
        connection.close()


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    broker = Broker(tmp_path_factory.mktemp("warren"))
    try:
        broker.wait_ready()
        connection = broker.connect("dash-setup")
        channel = connection.channel()
        for queue in ("dash-orders", "dash-work", "dash-test"):
            channel.queue_declare(queue, durable=True)
        for i in range(3):
            channel.basic_publish("", "dash-test", f"old {i}".encode())
        connection.close()
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="module")
def traffic(broker):
    traffic = Traffic(broker)
    traffic.start()
    yield traffic
    traffic.join()


@pytest.fixture(scope="module")
def page(broker, tmp_path_factory):
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
            viewport=VIEWPORT, device_scale_factor=1,
        )
        try:
            context.set_default_timeout(WAIT_MS)
            page = context.pages[0] if context.pages else context.new_page()
            page.on("dialog", lambda dialog: dialog.accept())
            errors = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.errors = errors
            yield page
            assert not errors, f"JavaScript errors in the page: {errors}"
        finally:
            context.close()


def go(page, broker, route):
    page.goto(f"{broker.url}/#/{route}")


def test_login_shows_an_error_then_the_overview(broker, page):
    page.goto(broker.url + "/")
    expect(page.locator("#login-form")).to_be_visible()
    expect(page.locator("#bar")).to_be_hidden()
    page.fill("#login-form [name=user]", "guest")
    page.fill("#login-form [name=password]", "wrong")
    page.click("#login-form button[type=submit]")
    expect(page.locator("#login-error")).to_contain_text("Wrong user or password")
    page.fill("#login-form [name=password]", "guest")
    page.click("#login-form button[type=submit]")
    expect(page.locator("#bar")).to_be_visible()
    expect(page.locator("#who")).to_have_text("guest")
    expect(page.locator("#main h1")).to_have_text("Overview")


def test_overview_plots_live_rates(broker, page, traffic, screenshot_path):
    go(page, broker, "")
    expect(page.locator("#plot-rates canvas")).to_be_visible()
    expect(page.locator("#plot-queued canvas")).to_be_visible()
    for rate in ("publish", "deliver", "ack", "confirm"):
        page.wait_for_function(
            "id => parseFloat(document.getElementById(id).textContent.replace(/,/g, '')) > 0",
            arg=f"rate-{rate}", timeout=WAIT_MS)
    assert not traffic.errors, traffic.errors
    expect(page.locator("#count-connections")).not_to_have_text("–")
    assert int(page.text_content("#count-queues")) >= 3
    # A few points on the plots, for the screenshot.
    page.wait_for_function("() => Number(document.getElementById('plot-rates').dataset.points) >= 4",
                           timeout=WAIT_MS)
    page.screenshot(path=str(screenshot_path))


def test_the_screenshot_is_a_picture(screenshot_path):
    with Image.open(screenshot_path) as image:
        assert image.format == "PNG"
        assert image.size == (VIEWPORT["width"], VIEWPORT["height"])
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
        assert colours is not None and len(colours) > 50, f"{len(colours or [])} colours: blank?"
        # Not one colour covering almost all of it (a blank or an error page).
        most = max(count for count, _ in colours)
        assert most < 0.95 * image.size[0] * image.size[1]


def queue_rows_messages(page):
    cells = page.locator("#queues-table tbody tr td:nth-child(7)").all_inner_texts()
    return [int(c.replace(",", "")) for c in cells]


def test_queues_table_filters_and_sorts(broker, page, traffic):
    go(page, broker, "queues")
    table = page.locator("#queues-table")
    expect(table.locator("tbody tr").first).to_be_visible()
    page.fill("input.filter", "dash-")
    expect(table.locator("tbody tr")).to_have_count(3)
    expect(page.locator(".count")).to_contain_text("3 queues")
    table.locator("th[data-key=messages]").click()
    expect(table.locator("th[data-key=messages]")).to_have_class("num sortable sorted-desc")
    expect(table.locator("tbody tr").first.locator("td:nth-child(2)")).to_have_text("dash-orders")
    counts = queue_rows_messages(page)
    assert counts == sorted(counts, reverse=True)
    table.locator("th[data-key=messages]").click()
    expect(table.locator("th[data-key=messages]")).to_have_class("num sortable sorted-asc")
    expect(table.locator("tbody tr").last.locator("td:nth-child(2)")).to_have_text("dash-orders")
    counts = queue_rows_messages(page)
    assert counts == sorted(counts)
    page.fill("input.filter", "dash-test")
    expect(table.locator("tbody tr")).to_have_count(1)
    table.get_by_role("link", name="dash-test").click()
    expect(page.locator("#main h1")).to_have_text("Queue dash-test")
    expect(page.locator("#plot-depth canvas")).to_be_visible()
    expect(page.locator("#q-ready")).to_have_text("3")


def test_queue_page_publishes_gets_and_purges(broker, page):
    go(page, broker, "queues/%2F/dash-test")
    expect(page.locator("#main h1")).to_have_text("Queue dash-test")
    assert broker.api("DELETE", "/api/queues/%2F/dash-test/contents")[0] == 204
    page.fill("#publish-message [name=payload]", "hello from the dashboard <b>&amp;</b>")
    page.click("#publish-message button[type=submit]")
    expect(page.locator("#flash")).to_contain_text("Message published")
    wait_until(lambda: broker.api("GET", "/api/queues/%2F/dash-test")[1]["messages"] == 1,
               what="the published message in dash-test")
    page.click("#get-messages button[type=submit]")
    payload = page.locator("#got-messages pre.payload")
    expect(payload).to_have_text("hello from the dashboard <b>&amp;</b>")  # as text, not HTML
    # ack_requeue_true: still there.
    assert broker.api("GET", "/api/queues/%2F/dash-test")[1]["messages"] == 1
    page.click("#purge")
    expect(page.locator("#flash")).to_contain_text("Queue purged")
    wait_until(lambda: broker.api("GET", "/api/queues/%2F/dash-test")[1]["messages"] == 0,
               what="dash-test purged")
    expect(page.locator("#q-total")).to_have_text("0")


def test_declare_a_queue_then_delete_it(broker, page):
    go(page, broker, "queues")
    page.fill("#declare-queue [name=name]", "dash-declared")
    page.uncheck("#declare-queue [name=durable]")
    page.click("#declare-queue button[type=submit]")
    expect(page.locator("#flash")).to_contain_text("Queue dash-declared declared")
    status, queue = broker.api("GET", "/api/queues/%2F/dash-declared")
    assert status == 200 and queue["durable"] is False
    page.fill("input.filter", "dash-declared")
    page.locator("#queues-table").get_by_role("link", name="dash-declared").click()
    expect(page.locator("#main h1")).to_have_text("Queue dash-declared")
    page.click("#delete")
    page.wait_for_url("**/#/queues")
    wait_until(lambda: broker.api("GET", "/api/queues/%2F/dash-declared")[0] == 404,
               what="dash-declared deleted")


def test_declare_an_exchange_and_bind_it(broker, page):
    go(page, broker, "exchanges")
    page.fill("#declare-exchange [name=name]", "dash-x")
    page.select_option("#declare-exchange [name=type]", "topic")
    page.click("#declare-exchange button[type=submit]")
    expect(page.locator("#flash")).to_contain_text("Exchange dash-x declared")
    page.fill("input.filter", "dash-x")
    page.locator("#exchanges-table").get_by_role("link", name="dash-x").click()
    expect(page.locator("#main h1")).to_have_text("Exchange dash-x")
    page.fill("#add-binding [name=destination]", "dash-test")
    page.fill("#add-binding [name=routing_key]", "orders.#")
    page.click("#add-binding button[type=submit]")
    expect(page.locator("#bindings")).to_contain_text("orders.#")
    status, bindings = broker.api("GET", "/api/bindings/%2F/e/dash-x/q/dash-test")
    assert status == 200 and [b["routing_key"] for b in bindings] == ["orders.#"]


def test_add_a_user_and_set_permissions(broker, page):
    go(page, broker, "users")
    expect(page.locator("#users-table")).to_contain_text("guest")
    page.fill("#add-user [name=name]", "dash-user")
    page.fill("#add-user [name=password]", "s3cret")
    page.select_option("#add-user [name=tags]", "management")
    page.click("#add-user button[type=submit]")
    expect(page.locator("#users-table")).to_contain_text("dash-user")
    page.select_option("#set-permissions [name=user]", "dash-user")
    page.fill("#set-permissions [name=configure]", "^dash-.*")
    page.click("#set-permissions button[type=submit]")
    expect(page.locator("#permissions-table")).to_contain_text("^dash-.*")
    status, permission = broker.api("GET", "/api/permissions/%2F/dash-user")
    assert status == 200
    assert (permission["configure"], permission["write"], permission["read"]) == ("^dash-.*", ".*", ".*")
    status, me = broker.api("GET", "/api/whoami", user=("dash-user", "s3cret"))
    assert status == 200 and me["name"] == "dash-user"


def test_close_a_connection(broker, page):
    victim = broker.connect("dash-victim")
    try:
        go(page, broker, "connections")
        page.fill("input.filter", "")
        row = page.locator("#connections-table tbody tr", has_text="dash-victim")
        expect(row).to_have_count(1)
        row.locator("button.close-connection").click()
        expect(page.locator("#flash")).to_contain_text("Connection closed")

        def closed():
            try:
                victim.process_data_events(time_limit=0.2)
            except pika.exceptions.AMQPConnectionError:
                return True
            return victim.is_closed

        wait_until(closed, timeout=10, what="pika to see its connection closed")
        expect(row).to_have_count(0)  # gone at the next refresh
    finally:
        if victim.is_open:
            try:
                victim.close()
            except pika.exceptions.AMQPError:
                pass


def test_channels_page_lists_the_traffic(broker, page, traffic):
    go(page, broker, "channels")
    expect(page.locator("#channels-table tbody tr").first).to_be_visible()
    expect(page.locator("#channels-table")).to_contain_text("confirm")


def test_a_bad_password_in_the_session_shows_the_login_again(broker, page):
    go(page, broker, "queues")
    expect(page.locator("#queues-table")).to_be_visible()
    page.evaluate("sessionStorage.setItem('warren.auth', 'Basic ' + btoa('guest:nope'))")
    go(page, broker, "exchanges")
    page.reload()
    expect(page.locator("#login-form")).to_be_visible()
    expect(page.locator("#bar")).to_be_hidden()


@pytest.fixture(scope="module")
def screenshot_path(tmp_path_factory):
    configured = os.environ.get("WARREN_DASHBOARD_SCREENSHOT")
    if configured:
        path = pathlib.Path(configured)
        return path if path.is_absolute() else REPO_ROOT / path
    return tmp_path_factory.mktemp("screenshot") / "dashboard.png"
