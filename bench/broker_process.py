"""What the scale benchmarks share (bench/backlog.py, delayed.py, topology.py): a free loopback
port, a broker started on a data directory and timed until it logs that it listens, and its
RSS read from /proc (once, or sampled in a thread for the peak). Only 127.0.0.1 is used."""
import os
import socket
import subprocess
import threading
import time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(warren, data, port, starts=1, config=None, log_filter="warn,warren::server=info"):
    """Starts the broker (management API off) with its log in `data`/../warren.log; returns it
    and the seconds until it logged that it listens (its `starts`-th such line: the log is kept
    across restarts). Waiting for its own log line, not a connection, so that a broker of
    someone else's on a reused port is never measured."""
    path = os.path.join(data, "..", "warren.log")
    log = open(path, "ab")
    command = [warren, "--listen", f"127.0.0.1:{port}", "--data-dir", data, "--management", "off"]
    if config:
        command += ["--config", config]
    process = subprocess.Popen(
        command, stdout=log, stderr=log,
        env={**os.environ, "RUST_LOG": os.environ.get("BENCH_LOG", log_filter)},
    )
    started = time.monotonic()
    while True:
        with open(path, "rb") as f:
            if f.read().count(b"listening for AMQP") >= starts:
                return process, time.monotonic() - started
        if process.poll() is not None:
            raise SystemExit(f"warren exited: {process.returncode}")
        time.sleep(0.005)


def status_kib(pid, field="VmRSS"):
    """A field of /proc/PID/status in KiB (0 once the process is gone)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except FileNotFoundError:
        pass
    return 0


class Sampler:
    """Samples a process's VmRSS every 0.5 s in a thread; `stop()` returns the largest sample
    (KiB)."""

    def __init__(self, pid):
        self.pid, self.peak, self.done = pid, 0, threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.done.is_set():
            self.peak = max(self.peak, status_kib(self.pid))
            self.done.wait(0.5)

    def stop(self):
        self.done.set()
        self.thread.join()
        return self.peak
