#!/usr/bin/env python3
"""Checks that the documentation a newcomer follows is true (issue 13).

1. README.md, "Quick start": every command of its shell blocks runs, as
   written, against the stack of $CHATLLM_STACK_ENV (the test stack under
   scripts/test), in order. Only what differs between that stack and the
   local one is replaced: the URLs, var/local/ and build/ become the
   stack's, and the placeholders the README asks the reader to fill in
   (SESSION_ID, KEY_ID) get the values the earlier commands printed. A
   command must exit 0; when the README shows its output (a "# {...}" line
   after it), the output must be JSON with the keys shown (or the error code
   shown); otherwise it must not be an error. Every line of those blocks
   must be ASCII, so that it pastes cleanly. scripts/up and scripts/test are
   not run here: scripts/test is what runs this, and
   tests/e2e/newcomer_test.sh runs scripts/up.
2. docs/api.md, "Errors": every error code of the table appears, quoted, in
   some test (tests/unit, tests/integration, tests/e2e), which is where each
   is produced and its status checked.

Exits non-zero and names each failure.
"""

import json
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FAILURES = []


def fail(message):
    FAILURES.append(message)
    print("FAIL: " + message)


def stack_env():
    path = os.environ.get("CHATLLM_STACK_ENV")
    if not path:
        sys.exit("CHATLLM_STACK_ENV is not set: run through scripts/test (or export it, see README.md)")
    env = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if "=" in line:
                k, v = line.split("=", 1)
                env[k] = v.strip('"')
    return env


def section(text, heading):
    """The lines of the markdown section `heading` up to the next heading."""
    lines = text.splitlines()
    start = lines.index(heading) + 1
    end = next((i for i in range(start, len(lines)) if re.match(r"^#{2,3} ", lines[i])), len(lines))
    return lines[start:end]


def shell_blocks(lines):
    """The ```sh blocks of `lines`, each a list of lines."""
    blocks, current = [], None
    for line in lines:
        if current is None and line.strip() == "```sh":
            current = []
        elif current is not None and line.strip() == "```":
            blocks.append(current)
            current = None
        elif current is not None:
            current.append(line)
    return blocks


def commands(block):
    """(command, sample) pairs: continuation lines joined; sample is the
    '# ...' line right after the command, if any."""
    out, pending = [], ""
    for line in block:
        if pending:
            pending += " " + line.strip()
        elif line.strip().startswith("#"):
            if out and out[-1][1] is None:
                out[-1] = (out[-1][0], line[1:].strip())
            continue
        elif line.strip():
            pending = line.strip()
        else:
            continue
        if pending.endswith("\\"):
            pending = pending[:-1].rstrip()
            continue
        out.append((pending, None))
        pending = ""
    return out


def error_code(text):
    try:
        doc = json.loads(text)
    except ValueError:
        return None
    if isinstance(doc, dict) and isinstance(doc.get("error"), dict):
        return doc["error"].get("code")
    return None


def check_readme(env):
    with open(os.path.join(ROOT, "README.md")) as f:
        readme = f.read()
    quick = section(readme, "## Quick start")
    blocks = shell_blocks(quick)
    if len(blocks) < 4:
        fail("README.md: Quick start has %d shell blocks, expected at least 4" % len(blocks))
        return
    for lines in blocks:
        for line in lines:
            if not all(ord(c) < 128 for c in line):
                fail("README.md quick start: a non-ASCII character (does not paste cleanly): %s" % line)
    subs = [
        ("http://127.0.0.1:8080", env["CHATLLM_URL"]),
        ("https://127.0.0.1:8443", env["CHATLLM_TLS_URL"]),
        ("var/local/", env["CHATLLM_VAR"] + "/"),
    ]
    shell_env = dict(os.environ)
    values = {}
    ran = 0
    for block in blocks:
        for command, sample in commands(block):
            if command.split()[0] in ("scripts/up", "scripts/test"):
                continue  # See the docstring.
            run = command
            for a, b in subs:
                run = run.replace(a, b)
            if run.startswith("build/"):
                run = env["CHATLLM_BUILD"] + "/" + run[len("build/"):]
            missing = [p for p in ("SESSION_ID", "KEY_ID") if p in run and p not in values]
            if missing:
                fail("README.md: %s is not known (no earlier command printed it): %s" % (missing[0], command))
                continue
            for placeholder, value in values.items():
                run = run.replace(placeholder, value)
            ran += 1
            m = re.match(r"^([A-Z_]+)=(.*)$", run)
            if m:  # An assignment: keep the variable for the next commands.
                p = subprocess.run(["bash", "-c", 'set -e; %s=%s; printf %%s "$%s"' % (m.group(1), m.group(2), m.group(1))],
                                   cwd=ROOT, env=shell_env, capture_output=True, text=True)
                if p.returncode != 0 or not p.stdout:
                    fail("README.md: `%s` failed: %s" % (command, p.stderr.strip()))
                shell_env[m.group(1)] = p.stdout
                continue
            p = subprocess.run(["bash", "-c", run], cwd=ROOT, env=shell_env, capture_output=True, text=True, timeout=60)
            out = p.stdout.strip()
            print("ran: %s\n  -> %s" % (command, out[:160].replace("\n", " ")))
            if p.returncode != 0:
                fail("README.md: `%s` exited %d: %s" % (command, p.returncode, p.stderr.strip()[:300]))
                continue
            if "SESSION_ID" not in values and "-X POST" in run and re.search(r"/v1/sessions(\s|$)", run):
                try:
                    values["SESSION_ID"] = json.loads(out)["id"]
                except (ValueError, KeyError):
                    fail("README.md: the first session create printed no id: %s" % out[:200])
            if " key create " in run:
                k = re.match(r"^ck_([0-9a-f]{16})_", out)
                if not k:
                    fail("README.md: `%s` printed no key: %s" % (command, out[:100]))
                else:
                    values["KEY_ID"] = k.group(1)
            if sample and sample.startswith("{"):
                shown = error_code(sample.replace("...", "0")) if '"error"' in sample else None
                if shown:
                    if error_code(out) != shown:
                        fail("README.md: `%s` should answer the error %s, got: %s" % (command, shown, out[:200]))
                    continue
                try:
                    json.loads(out)
                except ValueError:
                    fail("README.md: `%s` printed no JSON: %s" % (command, out[:200]))
                    continue
                for key in re.findall(r'"([a-z_]+)":', sample):
                    if '"%s":' % key not in out:
                        fail("README.md: the output of `%s` lacks \"%s\" shown in the README: %s" % (command, key, out[:200]))
            elif sample and sample.startswith("ck_"):
                pass  # Checked above.
            if error_code(out) and not (sample and '"error"' in sample):
                fail("README.md: `%s` answered an error: %s" % (command, out[:200]))
            if "event: error" in out:
                fail("README.md: `%s` streamed an error: %s" % (command, out[:300]))
    if ran < 10:
        fail("README.md: only %d quick-start commands ran; the section moved?" % ran)
    print("README.md quick start: %d commands ran" % ran)


def check_error_codes():
    with open(os.path.join(ROOT, "docs", "api.md")) as f:
        api = f.read()
    rows = [l for l in section(api, "## Errors") if re.match(r"^\| \d{3} \|", l)]
    codes = []
    for row in rows:
        m = re.match(r"^\| (\d{3}) \| `([a-z_]+)` \|", row)
        if m:
            codes.append((m.group(1), m.group(2)))
        elif not re.match(r"^\| \d{3} \| \S+ \|", row):
            fail("docs/api.md: an error row this check cannot read: %s" % row)
    if len(codes) < 30:
        fail("docs/api.md: only %d error codes found in the table" % len(codes))
    sources = []
    for sub in ("tests/unit", "tests/integration", "tests/e2e"):
        for dirpath, _, files in os.walk(os.path.join(ROOT, sub)):
            if "node_modules" in dirpath:
                continue
            for name in files:
                if name.endswith((".cc", ".sh", ".mjs", ".py")) and name != "docs_check.py":
                    with open(os.path.join(dirpath, name), errors="replace") as f:
                        sources.append(f.read())
    text = "\n".join(sources)
    for status, code in codes:
        # Quoted, also inside a C++ string literal (\"code\").
        if not re.search(r"[\"']%s\\?[\"']" % re.escape(code), text):
            fail("docs/api.md: error %s %s is produced by no test" % (status, code))
    print("docs/api.md errors: %d codes, each in a test" % len(codes))


def main():
    env = stack_env()
    check_readme(env)
    check_error_codes()
    if FAILURES:
        print("%d problem(s)" % len(FAILURES))
        sys.exit(1)
    print("docs check: ok")


if __name__ == "__main__":
    main()
