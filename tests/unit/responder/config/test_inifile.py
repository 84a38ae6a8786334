"""responder.config.inifile: fail2ban's layered INI semantics."""

from __future__ import annotations

from pathlib import Path

import pytest

from portsentinel.responder.config.inifile import (
    Ini,
    IniError,
    Value,
    parse_args_spec,
    parse_text,
    read_files,
    read_layered,
)
from tests.conftest import stock_file


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_layers_override_single_keys_in_order(tmp_path: Path) -> None:
    write(tmp_path / "jail.conf", "[DEFAULT]\nbantime = 600\n[sshd]\nenabled = false\nport = ssh\n")
    write(tmp_path / "jail.d/b.conf", "[sshd]\nport = 2222\n")
    write(tmp_path / "jail.d/a.conf", "[sshd]\nport = 22\nmaxretry = 3\n")
    write(tmp_path / "jail.local", "[sshd]\nenabled = true\nport = 3333\n")
    write(tmp_path / "jail.d/z.local", "[DEFAULT]\nbantime = 1h\n")
    write(tmp_path / "jail.d/y.local", "[sshd]\nport = 4444\n")
    ini = read_layered(tmp_path / "jail.conf")
    names = [Path(p).name for p in ini.paths]
    assert names == ["jail.conf", "a.conf", "b.conf", "jail.local", "y.local", "z.local"]
    assert ini.get("sshd", "enabled") == "true"
    assert ini.get("sshd", "port") == "4444"
    assert ini.get("sshd", "maxretry") == "3"
    assert ini.get("sshd", "bantime") == "1h"  # from [DEFAULT]
    v = ini.value("sshd", "port")
    assert v is not None and Path(v.path).name == "y.local" and v.line == 2
    # the replaced value is still reachable as %(known/port)s
    assert ini.sections["KNOWN/sshd"]["port"].text == "3333"


def test_local_only_and_missing(tmp_path: Path) -> None:
    write(tmp_path / "x.local", "[a]\nk = v\n")
    assert read_layered(tmp_path / "x.conf").get("a", "k") == "v"
    with pytest.raises(IniError, match="no such configuration file"):
        read_layered(tmp_path / "nothing.conf")


def test_multiline_comments_and_inline_semicolon() -> None:
    text = (
        "# header\n"
        "; also a comment\n"
        "[Definition]\n"
        "failregex = ^one <HOST>$\n"
        "            # commented-out alternative\n"
        "            ^two#three <HOST>$\n"
        "\n"
        "            ^four <HOST>$ ; inline comment\n"
        "key2: colon value\n"
        "empty =\n"
    )
    sec = parse_text(text, "f.conf")["Definition"]
    assert sec["failregex"].text == "^one <HOST>$\n^two#three <HOST>$\n\n^four <HOST>$"
    assert sec["failregex"].line == 4
    assert sec["failregex"].line_of(3) == 8
    assert sec["key2"].text == "colon value"
    assert sec["empty"].text == ""


def test_keys_are_case_insensitive_sections_are_not(tmp_path: Path) -> None:
    sec = parse_text("[Definition]\nFailRegex = x\n", "f")
    assert "failregex" in sec["Definition"]
    ini = read_files_from_text("[Definition]\nFailRegex = x\n[definition]\nfailregex = y\n", tmp_path)
    assert ini.get("Definition", "FAILREGEX") == "x"
    assert ini.get("definition", "failregex") == "y"


def read_files_from_text(text: str, tmp: Path) -> Ini:
    return read_files(write(tmp / "t.conf", text))


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("[a]\nk = 1\nk = 2\n", "key appears twice"),
        ("[a]\n[b]\n[a]\n", "section appears twice"),
        ("k = 1\n", "line before any"),
        ("[a]\njust words\n", "expected 'key = value'"),
    ],
)
def test_parse_errors_name_file_and_line(text: str, reason: str) -> None:
    with pytest.raises(IniError, match=reason) as err:
        parse_text(text, "f.conf")
    assert str(err.value).startswith("f.conf:")
    assert err.value.path == "f.conf" and err.value.line >= 1


def test_interpolation(tmp_path: Path) -> None:
    ini = read_files(
        write(
            tmp_path / "i.conf",
            "[DEFAULT]\nport = 22\nproto = tcp\n"
            "[s]\nrule = %(proto)s/%(port)s 100%%\nport = 2222\nother = %(t/x)s\nloop = %(loop)s\n"
            "bad = %(nope)s\nstray = 5% off\nname = %(__name__)s\nd = %(default/port)s\n"
            "[t]\nx = from t %(port)s\n",
        )
    )
    assert ini.get("s", "rule") == "tcp/2222 100%"
    assert ini.get("s", "rule", vars={"PORT": "80"}) == "tcp/80 100%"
    assert ini.get("s", "other") == "from t 2222"  # interpolated in the asking section's context
    assert ini.get("s", "name") == "s"
    assert ini.get("s", "d") == "22"
    assert ini.get("s", "missing", "fallback") == "fallback"
    with pytest.raises(IniError, match="deeper than"):
        ini.get("s", "loop")
    with pytest.raises(IniError, match="no option 'nope'") as err:
        ini.get("s", "bad")
    assert err.value.line == 9 and err.value.key == "bad" and err.value.section == "s"
    with pytest.raises(IniError, match="must be followed"):
        ini.get("s", "stray")
    with pytest.raises(IniError, match="missing"):
        ini.get("s", "absent")


def test_known_refers_to_the_overridden_value(tmp_path: Path) -> None:
    write(tmp_path / "f.conf", "[Definition]\nfailregex = ^base <HOST>$\n")
    write(tmp_path / "f.local", "[Definition]\nfailregex = %(known/failregex)s\n            ^extra <HOST>$\n")
    ini = read_layered(tmp_path / "f.conf")
    assert ini.get("Definition", "failregex") == "^base <HOST>$\n^extra <HOST>$"


def test_includes_before_after_and_local(tmp_path: Path) -> None:
    write(tmp_path / "common.conf", "[DEFAULT]\na = common\nb = common\nc = common\n")
    write(tmp_path / "common.local", "[DEFAULT]\nb = common-local\n")
    write(tmp_path / "sub/after.conf", "[DEFAULT]\nc = after\n")
    write(
        tmp_path / "f.conf",
        "[INCLUDES]\nbefore = common.conf\n         missing.conf\nafter = sub/after.conf\n"
        "[DEFAULT]\na = f\nc = f\n",
    )
    ini = read_layered(tmp_path / "f.conf")
    assert [Path(p).name for p in ini.paths] == ["common.conf", "common.local", "f.conf", "after.conf"]
    assert ini.get("x", "a") == "f"
    assert ini.get("x", "b") == "common-local"
    assert ini.get("x", "c") == "after"


def test_include_cycle_is_an_error(tmp_path: Path) -> None:
    write(tmp_path / "a.conf", "[INCLUDES]\nbefore = b.conf\n")
    write(tmp_path / "b.conf", "[INCLUDES]\nafter = a.conf\n")
    with pytest.raises(IniError, match="include cycle") as err:
        read_layered(tmp_path / "a.conf")
    assert err.value.path.endswith("b.conf") and err.value.line == 2


def test_value_is_frozen_and_remembers_origin() -> None:
    v = Value("x", "p.conf", 3)
    with pytest.raises(AttributeError):
        v.text = "y"  # type: ignore[misc]
    assert v.line_of(5) == 3


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("sshd", ("sshd", {})),
        ("  sshd[mode=aggressive]  ", ("sshd", {"mode": "aggressive"})),
        (
            'nftables[name=SSH, port="ssh, 2222", protocol=tcp]',
            ("nftables", {"name": "SSH", "port": "ssh, 2222", "protocol": "tcp"}),
        ),
        ("a[x='q]\"uote', y = 2 ][z=3]", ("a", {"x": 'q]"uote', "y": "2", "z": "3"})),
        ("a[]", ("a", {})),
        ("a[k=]", ("a", {"k": ""})),
        ("a[k=v,]", ("a", {"k": "v"})),
    ],
)
def test_parse_args_spec(spec: str, expected: tuple[str, dict[str, str]]) -> None:
    assert parse_args_spec(spec) == expected


@pytest.mark.parametrize("spec", ["", "a[x]", "a[=1]", "a b[x=1]", 'a[x="unterminated]'])
def test_parse_args_spec_errors(spec: str) -> None:
    with pytest.raises(ValueError):
        parse_args_spec(spec)


def test_reads_stock_fail2ban_sshd_and_jail() -> None:
    ini = read_layered(stock_file("fail2ban", "etc/fail2ban/filter.d/sshd.conf"))
    assert [Path(p).name for p in ini.paths] == ["common.conf", "sshd.conf"]
    assert ini.get("Definition", "mode") == "normal"
    assert ini.get("Definition", "journalmatch") == "_SYSTEMD_UNIT=sshd.service + _COMM=sshd"
    assert ini.get("lt_journal", "datepattern") == "{^LN-BEG}"
    assert "<mdre-<mode>>" in ini.get("Definition", "failregex")
    jail = read_layered(stock_file("fail2ban", "etc/fail2ban/jail.conf"))
    assert "sshd" in jail.user_sections()
    assert jail.get("sshd", "port") == "ssh"
    assert jail.get("sshd", "enabled") == "true"  # Debian's jail.d/defaults-debian.conf
