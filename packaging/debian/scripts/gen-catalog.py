#!/usr/bin/python3
"""Build portsentinel.catalog from portsentinel.catalog.in and portsentinel.record.MESSAGE_IDS.

Run from the source root with PYTHONPATH set to the build tree.

Every event kind in portsentinel/record.py must be explained, and nothing else: the build fails otherwise, so a new
MESSAGE_ID cannot ship without its catalog entry.
"""

import re
import sys

from portsentinel import record as psrecord

template, output = sys.argv[1], sys.argv[2]
ids = {event.value: msgid for event, msgid in psrecord.MESSAGE_IDS.items()}
seen: set[str] = set()
out: list[str] = []
with open(template, encoding="utf-8") as fh:
    for line in fh:
        if line.startswith("#"):
            continue
        m = re.fullmatch(r"-- (\S+)\n", line)
        if m:
            name = m.group(1)
            if name not in ids:
                sys.exit(f"{template}: entry for unknown event {name!r}")
            if name in seen:
                sys.exit(f"{template}: event {name!r} explained twice")
            seen.add(name)
            line = f"-- {ids[name]}\n"
        out.append(line)
missing = sorted(set(ids) - seen)
if missing:
    sys.exit(f"{template}: no catalog entry for event(s) {', '.join(missing)} (MESSAGE_IDS in portsentinel/record.py)")
text = "".join(out).lstrip("\n")
with open(output, "w", encoding="utf-8") as fh:
    fh.write(text)
