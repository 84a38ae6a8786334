"""Is an entry really from who it says? journald's trusted fields cannot be set by a client."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from portsentinel.responder.config.jailconf import JailConfig

TRUSTED_UID = "_UID"


def journal_trusted(fields: Mapping[str, str], jail: JailConfig) -> str | None:
    """None when the entry's trusted fields match the jail's trusted identity; else why not."""
    if jail.trusted_uids:
        uid = fields.get(TRUSTED_UID, "")
        if not uid.isdigit() or int(uid) not in jail.trusted_uids:
            return f"_UID={uid or '(none)'} is not a trusted writer ({','.join(map(str, jail.trusted_uids))})"
    if jail.trusted_units:
        unit = fields.get("_SYSTEMD_UNIT", "")
        if unit not in jail.trusted_units:
            return f"_SYSTEMD_UNIT={unit or '(none)'} is not a trusted unit ({','.join(jail.trusted_units)})"
    return None


def pushed_down(groups: Sequence[Mapping[str, str]], jail: JailConfig) -> list[dict[str, str | tuple[str, ...]]]:
    """The jail's journal match groups with its trusted ``_UID`` values added to each group.

    sd-journal ORs terms on one field and ANDs different fields, so ``_UID=0 _UID=105`` inside a group reads
    only entries written by one of those users: records other users forge never leave journald. A jail that
    trusts any writer (empty ``trusted_uid``), and a group that names ``_UID`` itself, are left as they are.
    The trust check still runs on every entry read (:func:`journal_trusted`).
    """
    uids = tuple(str(u) for u in jail.trusted_uids)
    out: list[dict[str, str | tuple[str, ...]]] = []
    for group in groups or [{}]:
        terms: dict[str, str | tuple[str, ...]] = dict(group)
        if uids and TRUSTED_UID not in terms:
            terms[TRUSTED_UID] = uids
        out.append(terms)
    return out
