"""The responder's decisions without I/O: entry, trust, jail, guard, ban book, keeper, health."""
