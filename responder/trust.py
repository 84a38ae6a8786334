"""Is an entry really from who it says? journald's trusted fields cannot be set by a client."""

from __future__ import annotations

from collections.abc import Mapping

from .jailconf import JailConfig


def journal_trusted(fields: Mapping[str, str], jail: JailConfig) -> str | None:
    """None when the entry's trusted fields match the jail's trusted identity; else why not."""
    if jail.trusted_uids:
        uid = fields.get("_UID", "")
        if not uid.isdigit() or int(uid) not in jail.trusted_uids:
            return f"_UID={uid or '(none)'} is not a trusted writer ({','.join(map(str, jail.trusted_uids))})"
    if jail.trusted_units:
        unit = fields.get("_SYSTEMD_UNIT", "")
        if unit not in jail.trusted_units:
            return f"_SYSTEMD_UNIT={unit or '(none)'} is not a trusted unit ({','.join(jail.trusted_units)})"
    return None
