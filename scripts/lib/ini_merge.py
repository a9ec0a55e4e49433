"""Merges an override INI file into an app config, for scripts/stack: the
local stack's own settings (conf/app.local.ini, docs/config.md) survive
every re-rendering of var/local/app/*.ini.

    /usr/bin/python3 scripts/lib/ini_merge.py CONFIG OVERRIDE

A key the override sets replaces the key of the same section in CONFIG (or
joins that section); a section CONFIG lacks is appended whole. Lines are
copied as written, comments included; the app parses and checks the result
(chatllm-fcgi --check). A key cannot be removed this way, only changed.
"""

import os
import re
import sys

SECTION = re.compile(r"^\s*\[([^\]]*)\]")
KEY = re.compile(r"^\s*([^;#=\s][^=]*?)\s*=")


def parse(lines):
    """(section, key) of each line: key is None for comments, blanks and headers."""
    section = ""
    out = []
    for line in lines:
        m = SECTION.match(line)
        if m:
            section = m.group(1).strip()
            out.append((section, None))
            continue
        k = KEY.match(line)
        out.append((section, k.group(1) if k else None))
    return out


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: ini_merge.py CONFIG OVERRIDE")
    config_path, override_path = sys.argv[1], sys.argv[2]
    with open(config_path) as f:
        config = f.read().splitlines()
    with open(override_path) as f:
        override = f.read().splitlines()

    # The override's settings, by section, in file order; its comments and
    # blank lines go with the section they are in.
    sections = {}
    order = []
    for line, (section, key) in zip(override, parse(override)):
        if section == "" and key is None:
            continue  # Comments before the first section.
        if section == "" and key is not None:
            sys.exit("%s: '%s' is outside of any [section]" % (override_path, line.strip()))
        if section not in sections:
            sections[section] = []
            order.append(section)
        if not SECTION.match(line):
            sections[section].append((key, line))

    note = "; from %s" % override_path
    replaced = set()
    out = []
    parsed = parse(config)

    def flush(section):
        """The override's keys of `section` that CONFIG does not have."""
        extra = [line for key, line in sections.get(section, []) if key and (section, key) not in replaced]
        if extra:
            # After the section's last setting: blank lines and comments at
            # its end introduce the next section.
            tail = []
            while out and (not out[-1].strip() or out[-1].lstrip()[:1] in (";", "#")):
                tail.insert(0, out.pop())
            out.append(note)
            out.extend(extra)
            out.extend(tail)
        replaced.update((section, key) for key, _ in sections.get(section, []) if key)

    current = None
    for line, (section, key) in zip(config, parsed):
        if SECTION.match(line):
            if current is not None:
                flush(current)
            current = section
            out.append(line)
            continue
        if key is not None and section in sections:
            new = [l for k, l in sections[section] if k == key]
            if new:
                out.append(new[-1] + "  " + note)
                replaced.add((section, key))
                continue
        out.append(line)
    if current is not None:
        flush(current)
    present = {s for s, _ in parsed}
    for section in order:
        if section in present:
            continue
        out.append("")
        out.append(note)
        out.append("[%s]" % section)
        out.extend(line for _, line in sections[section])

    with open(config_path + ".tmp", "w") as f:
        f.write("\n".join(out) + "\n")
    os.replace(config_path + ".tmp", config_path)


if __name__ == "__main__":
    main()
