"""pytest plugin loaded by scripts/client-suites.sh (`-p pytest_exclude`) into the py-amqp and kombu
suites: the tests listed in CLIENT_SUITES_EXCLUDE (lines "node id or prefix<TAB>reason") are
marked skipped with the reason, so they show in the report as "SKIPPED ... excluded: reason" and
are counted, instead of being deselected silently. An entry that matches no collected test is a
usage error (a stale list after a version bump)."""

import os

import pytest


def _entries():
    for line in os.environ.get("CLIENT_SUITES_EXCLUDE", "").splitlines():
        prefix, sep, reason = line.partition("\t")
        if sep and prefix:
            yield prefix, reason


def pytest_collection_modifyitems(config, items):
    entries = list(_entries())
    unused = {prefix for prefix, _ in entries}
    for item in items:
        for prefix, reason in entries:
            if item.nodeid.startswith(prefix):
                item.add_marker(pytest.mark.skip(reason=f"excluded: {reason}"))
                unused.discard(prefix)
                break
    if unused:
        raise pytest.UsageError(
            "excluded tests that match no collected test: " + ", ".join(sorted(unused))
        )
