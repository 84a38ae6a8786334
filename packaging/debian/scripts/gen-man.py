#!/usr/bin/python3
"""Man pages for the three commands, generated from their argparse definitions (PYTHONPATH: build tree).

argparse-manpage (Debian's python3-argparse-manpage) renders the parser; this script gives the page its
section, a whatis line, a date and version, and appends the hand-written sections in man/<name>.extra.
"""

import datetime
import os
import re
import subprocess
import sys

import portsentinel

PAGES = [
    # name, section, module, whatis
    ("portsentinel-detector", "8", "portsentinel.detector.cli", "watch ports and report scans as structured records"),
    ("portsentinel-responder", "8", "portsentinel.responder.cli",
     "ban the sources of portsentinel's records, per jail"),
    ("portsentinel", "1", "portsentinel.client.cli", "control the portsentinel responder and run the pipeline"),
    ("portsentinel-fleet", "8", "portsentinel.fleet.cli", "share bans between hosts over NATS JetStream"),
]

MACROS = "TH|SH|SS|TP|IP|HP|PP|LP|P|B|I|BR|IR|RB|RI|BI|IB|br|nf|fi|RS|RE|UR|UE"

extra_dir, out_dir = sys.argv[1], sys.argv[2]
version = portsentinel.__version__
epoch = int(os.environ.get("SOURCE_DATE_EPOCH", "0")) or None
when = datetime.datetime.fromtimestamp(epoch or 0, datetime.UTC) if epoch else datetime.datetime.now(datetime.UTC)
date = when.strftime("%Y-%m-%d")
env = dict(os.environ)
os.makedirs(out_dir, exist_ok=True)
for name, section, module, whatis in PAGES:
    roff = subprocess.run(["argparse-manpage", "--module", module, "--function", "build_parser",
                           "--project-name", "portsentinel"],
                          env=env, check=True, capture_output=True, text=True).stdout
    roff, n = re.subn(r'^\.TH .*$', f'.TH {name.upper()} {section} {date} "portsentinel {version}" "portsentinel"',
                      roff, count=1, flags=re.M)
    assert n == 1, f"{name}: no .TH line from argparse-manpage"
    roff, n = re.subn(r"^\.SH NAME\n.*$", f".SH NAME\n{name} \\\\- {whatis}", roff, count=1, flags=re.M)
    assert n == 1, f"{name}: no NAME section from argparse-manpage"
    # argparse-manpage 1.x emits a comment-less page; strip its blank lines (roff reads them as breaks).
    roff = re.sub(r"\n{2,}", "\n", roff)
    # ... and it breaks lines where argparse wrapped the help text: let roff fill them.
    roff = re.sub(r"^\.br\n", "", roff, flags=re.M)
    # Without --url it ends with a placeholder link ("<<UNSET --url OPTION>>"): drop that section.
    roff = re.sub(r"^\.SH (?:AUTHORS?|DISTRIBUTION)\n(?:(?!\.SH ).*\n?)*", "", roff, flags=re.M)
    assert "<<UNSET" not in roff, f"{name}: argparse-manpage placeholder left"
    # Help text is copied verbatim: a text line starting with '.' or "'" would be read as a roff request.
    roff = re.sub(rf"^(?!\.(?:{MACROS})\b)([.'])", r"\\&\1", roff, flags=re.M)
    extra = os.path.join(extra_dir, f"{name}.extra")
    if os.path.exists(extra):
        with open(extra, encoding="utf-8") as fh:
            roff = roff.rstrip("\n") + "\n" + fh.read()
    with open(os.path.join(out_dir, f"{name}.{section}"), "w", encoding="utf-8") as fh:
        fh.write(roff)
