"""portsentinel: a port-scan detector and a fail2ban-style responder, as one import namespace.

`portsentinel.record` is the schema both stages share, `portsentinel.detector` the sentry,
`portsentinel.responder` the action stage and `portsentinel.client` the `portsentinel` command.
"""

__version__ = "0.1.0"
