"""The toolbox both stages share: value grammars, systemd and journald, JSON lines, PortSentry keys, paths.

The rule that keeps the stages apart without copies: ``portsentinel.detector`` and ``portsentinel.responder``
import ``portsentinel.record`` and ``portsentinel.common``; ``common`` imports neither stage (tests check it).

- :mod:`.values`          one grammar each for durations, booleans, ports and networks (pure)
- :mod:`.portsentry_keys` PortSentry's ``KEY="value"`` lines, with their line numbers (pure)
- :mod:`.paths`           the default paths the stages agree on (sockets, files, directories)
- :mod:`.jsonlines`       the JSON-lines record writer (mode 0640, whole lines, follows logrotate)
- :mod:`.systemd`         journald: is one there, send a record (the only module that imports ``systemd``
  for writing)
- :mod:`.journal`         journald: following it by matches and cursor (the only module that imports ``systemd``
  for reading; the responder's journal source and the fleet daemon's decisions input)
- :mod:`.sdnotify`        READY, STOPPING, STATUS and watchdog pings under systemd
- :mod:`.rearm`           the re-arm message: the responder names the sources whose ban ended (pure)
- :mod:`.hostproto`       which IP protocols this host handles, and its SCTP ports in use (read from /proc/net)
"""
