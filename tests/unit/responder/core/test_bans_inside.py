"""BanBook.inside: the bans of a jail inside a network, from a sorted index kept up to date after it is built."""

from __future__ import annotations

import ipaddress
import random

from portsentinel.responder.core.bans import Ban, BanBook


def _slow_inside(book: BanBook, jail: str, net: str) -> set[str]:
    outer = ipaddress.ip_network(net)
    return {ip for (j, ip) in book.active if j == jail and ip != net
            and ipaddress.ip_network(ip).version == outer.version
            and ipaddress.ip_network(ip).subnet_of(outer)}  # type: ignore[arg-type]


def test_inside_agrees_with_a_scan_of_every_ban_through_adds_and_removes() -> None:
    rnd = random.Random(7)
    book = BanBook()
    pool = ([f"2001:db8:{i:x}::/64" for i in range(40)] + [f"2001:db8:{i:x}::{i:x}" for i in range(40)]
            + ["2001:db8::/48", "2001:db8:1::/48"] + [f"192.0.2.{i}" for i in range(0, 256, 7)]
            + ["192.0.2.0/24", "192.0.2.128/25", "198.51.100.0/24"])
    queries = ["2001:db8::/48", "2001:db8::/32", "2001:db8:5::/64", "192.0.2.0/24", "192.0.2.128/25", "0.0.0.0/0",
               "::/0", "198.51.100.0/24"]
    for step in range(3000):
        jail = rnd.choice(("a", "b"))
        ip = rnd.choice(pool)
        if rnd.random() < 0.6:
            book.add(Ban(jail, ip, 0.0, 100.0 + step))
        else:
            book.remove(jail, ip)
        if step % 50 == 0:
            for q in queries:
                for j in ("a", "b"):
                    assert {b.ip for b in book.inside(j, q)} == _slow_inside(book, j, q), (step, j, q)


def test_inside_returns_the_bans_themselves() -> None:
    book = BanBook()
    inner = Ban("j", "2001:db8:1:2::/64", 0.0, 10.0)
    book.add(inner)
    book.add(Ban("j", "2001:db9::/64", 0.0, 10.0))
    book.add(Ban("k", "2001:db8:1:3::/64", 0.0, 10.0))
    assert book.inside("j", "2001:db8::/32") == [inner]
    assert book.inside("j", "2001:db8:1:2::/64") == []  # the network itself is not inside it
    later = Ban("j", "2001:db8:1:4::9", 0.0, 10.0)
    book.add(later)  # after the index exists
    assert {b.ip for b in book.inside("j", "2001:db8::/32")} == {inner.ip, later.ip}
    book.remove("j", inner.ip)
    assert book.inside("j", "2001:db8::/32") == [later]
