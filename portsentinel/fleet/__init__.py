"""portsentinel-fleet: ban sharing between hosts over a NATS JetStream key-value bucket (docs/fleet.md).

The only part of portsentinel that talks to NATS; it imports ``portsentinel.record`` and ``portsentinel.common``,
never the detector or the responder. Pure halves (no I/O, clock passed in) and thin adapters:

- :mod:`.keys`, :mod:`.codec`  the bucket's keys and values, strictly validated
- :mod:`.config`               fleet.conf < fleet.local, one typed object, file:line: key errors
- :mod:`.publish`              a shared responder decision -> a put or a delete of this host's key
- :mod:`.applier`              a bucket entry -> a line for the responder's [fleet] jail (trust, caps, PS_ORIGINS)
- :mod:`.lines`                those lines as records
"""
