"""Default paths the detector, the responder and the client agree on. Every one can be changed on the command
line (and `portsentinel run` passes each through); these are what the Debian package's units use."""

from __future__ import annotations

#: Configuration of both stages (detector.conf, jail.conf, filter.d/, actions.d/).
CONFIG_DIR = "/etc/portsentinel"
#: The detector's records where no journald runs.
ALERTS_JSONL = "/var/log/portsentinel/alerts.jsonl"
#: The responder's decisions where no journald runs.
DECISIONS_JSONL = "/var/log/portsentinel/responder.jsonl"
#: The responder's wake socket: the detector sends a data-less datagram after each alert record.
WAKE_SOCKET = "/run/portsentinel/wake.sock"
#: The detector's re-arm socket: the responder names the sources whose ban ended (portsentinel.common.rearm).
#: In a directory of the detector's own (the Debian unit's RuntimeDirectory), group-writable for the responder.
REARM_SOCKET = "/run/portsentinel-detector/rearm.sock"
#: The responder's control socket (`portsentinel status`, `ban`, `unban`, `reload`).
CONTROL_SOCKET = "/run/portsentinel/responder.sock"
#: The responder's state: bans and journal cursors in sqlite.
STATE_DIR = "/var/lib/portsentinel"
#: journald's native socket: a journald runs when it accepts a datagram connect.
JOURNAL_SOCKET = "/run/systemd/journal/socket"
#: The fleet daemon's wake socket: the responder nudges it after writing a shared decision (docs/fleet.md).
FLEET_WAKE_SOCKET = "/run/portsentinel-fleet/wake"
#: The fleet daemon's remote bans for the responder's [fleet] jail (JSON lines, owned by the fleet's user).
FLEET_JSONL = "/var/lib/portsentinel-fleet/remote.jsonl"
