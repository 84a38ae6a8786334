"""portsentinel's responder: jails over alert records, actions without a shell."""
