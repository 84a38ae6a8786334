"""portsentinel's responder: jails over alert records, actions without a shell."""

__version__ = "0.1.0"
