"""Name grammars of the tools an action names objects in (nft, iptables, ipset). Pure.

An action declares the names it will create in ``[Definition] names`` as ``KIND:TEMPLATE`` words, for example
``names = nft:{{ table }} nft:{{ name }}_v4 iptables:portsentinel-{{ name }}``. They are rendered with the jail's
static variables when the action is loaded (``portsentinel check-config`` and every start or reload), and each
must fit its tool's grammar, so a jail name such as ``2fast`` (an nft name starts with a letter) or a 30-character
one (an iptables chain has at most 28) is refused with file:line before anything runs, never at its first ban.
"""

from __future__ import annotations

import re

#: kind → (grammar, what it means in words). The limits are the kernel's: NFT_NAME_MAXLEN 256 (our batch
#: writer keeps to 64), XT_EXTENSION_MAXNAMELEN 29 and IPSET_MAXNAMELEN 32, each including the final NUL.
GRAMMARS: dict[str, tuple[re.Pattern[str], str]] = {
    "nft": (re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}\Z"),
            "a letter or '_', then letters, digits, '_', '.', '-' (at most 64)"),
    "iptables": (re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,27}\Z"),
                 "letters, digits, '_', '.', '-', not starting with '-' (at most 28)"),
    "ipset": (re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,30}\Z"),
              "letters, digits, '_', '.', '-', not starting with '-' (at most 31)"),
}


def problem(kind: str, name: str) -> str | None:
    """Why ``name`` cannot be a ``kind`` name, or None when it can."""
    grammar = GRAMMARS.get(kind)
    if grammar is None:
        return f"unknown name kind {kind!r} (known: {', '.join(sorted(GRAMMARS))})"
    if not grammar[0].match(name):
        return f"{kind} name {name!r} is not valid: {grammar[1]}"
    return None


def nft_ident(kind: str, name: str) -> str:
    """``name`` when it is a valid nft name, else ValueError (for script writers such as the nft batch)."""
    why = problem("nft", name)
    if why is not None:
        raise ValueError(f"bad nft {kind} name {name!r}")
    return name
