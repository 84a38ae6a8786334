"""Filters: records and log lines to failures, fail2ban-compatible (regexes, date detection, multi-line)."""
