"""The kernel trap: its nftables ruleset, and its hits turned into failures of their jail."""
