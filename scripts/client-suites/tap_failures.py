"""Lists the failed tests of one test file's `node --test --test-reporter=tap` report, one line
each: "FAILED file > describe > ... > test: error [failureType]" (the ids of excluded.tsv). Suites
that failed only because a test in them did are left out.

Usage: python3 tap_failures.py REPORT.tap FILE-NAME"""

import os
import re
import sys

SUBTEST = re.compile(r"^( *)# Subtest: (.*)$")
RESULT = re.compile(r"^( *)not ok \d+ - (.*?)(?: # (?:TODO|SKIP).*)?$")
FIELD = re.compile(r"^ *(failureType|error|type): ?(.*)$")


def unquote(value):
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == "'":
        value = value[1:-1].replace("''", "'")
    return value


def main(path, file_name):
    lines = open(path, encoding="utf-8", errors="replace").read().splitlines()
    stack = []
    failures = []
    i = 0
    while i < len(lines):
        line = lines[i]
        sub = SUBTEST.match(line)
        if sub:
            depth = len(sub.group(1)) // 4
            name = sub.group(2)
            if depth == 0 and os.path.isabs(name):
                name = os.path.basename(name)
            del stack[depth:]
            stack.append(name)
        res = RESULT.match(line)
        if res:
            depth = len(res.group(1)) // 4
            fields = {}
            j = i + 1
            if j < len(lines) and lines[j].strip() == "---":
                j += 1
                while j < len(lines) and lines[j].strip() != "...":
                    field = FIELD.match(lines[j])
                    if field and field.group(1) not in fields:
                        value = field.group(2)
                        if value in ("|-", "|", ">-", ">") and j + 1 < len(lines):
                            value = lines[j + 1]
                        fields[field.group(1)] = unquote(value)
                    j += 1
            if fields.get("failureType") != "subtestsFailed":
                names = [file_name] + stack[:depth] + [res.group(2)]
                if depth == 0 and os.path.isabs(res.group(2)):
                    names = [file_name]  # the file itself failed (e.g. it timed out)
                error = fields.get("error", "?")
                kind = fields.get("failureType", "")
                failures.append(f"FAILED {' > '.join(names)}: {error}" + (f" [{kind}]" if kind else ""))
            i = j
        i += 1
    for failure in failures:
        print(failure)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
