"""render.py: words are split before values go in, so no value adds an argument or reaches a shell unquoted."""

from __future__ import annotations

import shlex
import subprocess

import pytest

from portsentinel.responder.actions.render import (
    RenderError,
    TemplateError,
    Where,
    compile_command,
    compile_commands,
    split_words,
)
from portsentinel.responder.actions.variables import VarError, validate_vars

W = Where("t.conf", 7, "actionban")
HOSTILE = [
    "1.2.3.4; rm -rf /",
    "$(reboot)",
    "`reboot`",
    "1.2.3.4 -j ACCEPT",
    "1.2.3.4\nreboot",
    "-rf",
    "--help",
    "evil.example.com; reboot",
    "a' b \"c",
    "1.2.3.4\x00x",
    "",
]


def test_split_words_quotes_and_jinja_regions() -> None:
    assert split_words("a 'b c' \"d {{ x }}\" {{ y | default('p q') }}z \\ e", W) == [
        "a", "b c", "d {{ x }}", "{{ y | default('p q') }}z", " e"]
    assert split_words("x '' y", W) == ["x", "", "y"]
    with pytest.raises(TemplateError, match="t.conf:7: actionban: unterminated"):
        split_words("a 'b", W)
    with pytest.raises(TemplateError, match="unterminated"):
        split_words("a {{ b", W)


def test_render_keeps_each_value_in_its_word() -> None:
    cmd = compile_command("iptables -I c 1 -s {{ ip }} -j DROP", W)
    assert cmd.render(validate_vars({"ip": "::ffff:10.0.0.1"})) == [
        "iptables", "-I", "c", "1", "-s", "10.0.0.1", "-j", "DROP"]
    assert cmd.render(validate_vars({"ip": "2001:DB8::0:7"}))[5] == "2001:db8::7"


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_ip_never_renders(value: str) -> None:
    cmd = compile_command("ip route add blackhole {{ ip }}/32", W)
    with pytest.raises(VarError, match="ip"):  # refused before any template sees it
        cmd.render(validate_vars({"ip": value}))


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_names_refused(value: str) -> None:
    for name in ("jail", "name"):
        with pytest.raises(VarError):
            validate_vars({name: value})


@pytest.mark.parametrize("value", [v for v in HOSTILE if v and "\x00" not in v and not v.startswith("-")])
def test_free_text_stays_one_argument(value: str) -> None:
    cmd = compile_command("logger -t ps -- {{ matches }}", W)
    argv = cmd.render(validate_vars({"matches": value}))
    assert argv[:4] == ["logger", "-t", "ps", "--"] and len(argv) == 5
    # Control characters other than newline are replaced.
    assert "\x00" not in argv[4]


@pytest.mark.parametrize("value", ["-rf", "--help", "-"])
def test_value_never_becomes_an_option(value: str) -> None:
    cmd = compile_command("echo {{ matches }}", W)
    with pytest.raises(RenderError, match="option-like"):
        cmd.render(validate_vars({"matches": value}))
    assert compile_command("echo -{{ port }}", W).render(validate_vars({"port": 5})) == ["echo", "-5"]
    assert compile_command("echo {{ bantime }}", W).render(validate_vars({"bantime": -1})) == ["echo", "-1"]


def test_args_expands_configuration_only() -> None:
    cmd = compile_command("iptables -j {{ blocktype|args }} -s {{ ip }}", W)
    assert cmd.render(validate_vars({"blocktype": "REJECT --reject-with tcp-reset", "ip": "1.2.3.4"})) == [
        "iptables", "-j", "REJECT", "--reject-with", "tcp-reset", "-s", "1.2.3.4"]
    assert compile_command("x {{ opt|args }} y", W).render(validate_vars({"opt": ""})) == ["x", "y"]
    for bad in ("x {{ ip|args }}", "x {{ (matches ~ '')|args }}", "x {{ name|args }}"):
        with pytest.raises(TemplateError, match="only expand configuration"):
            compile_command(bad, W)


def test_program_must_be_literal_and_syntax_errors_name_place() -> None:
    with pytest.raises(TemplateError, match="t.conf:7: actionban: the program"):
        compile_command("{{ prog }} x", W)
    with pytest.raises(TemplateError, match="t.conf:7: actionban: TemplateSyntaxError"):
        compile_command("echo {% if x %}", W)


def test_missing_variable_is_an_error() -> None:
    with pytest.raises(RenderError, match="UndefinedError"):
        compile_command("echo {{ nope }}", W).render(validate_vars({}))


def test_sandbox_blocks_attribute_escape() -> None:
    cmd = compile_command("echo {{ ''.__class__.__mro__[1].__subclasses__() }}", W)
    with pytest.raises(RenderError):
        cmd.render(validate_vars({}))


def test_multiline_value_lines_and_markers() -> None:
    cmds = compile_commands("a {{ ip }}\n\n# comment\n!try b \\\n  c\n", "f.conf", "actionban", [3, 4, 5, 6, 7])
    assert [c.where.line for c in cmds] == [3, 6]
    assert cmds[1].check is False and cmds[0].check is True
    assert cmds[1].render(validate_vars({})) == ["b", "c"]
    assert compile_command("@hosts-deny add {{ ip }}", W).internal == "hosts-deny"


def test_portsentry_tokens() -> None:
    cmd = compile_command("/bin/x $TARGET$ $PORT$ $MODE$", W)
    assert cmd.render(validate_vars({"ip": "1.2.3.4", "port": 80, "mode": "stcp"})) == [
        "/bin/x", "1.2.3.4", "80", "stcp"]


def _sh(argv: list[str]) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=True, timeout=10).stdout


@pytest.mark.parametrize("value", ["$(echo PWNED)", "`echo PWNED`", "a; echo PWNED", "x' ; echo PWNED; '",
                                   "a\necho PWNED", "$HOME", "a|echo PWNED", "a && echo PWNED"])
def test_shell_mode_quotes_every_value(value: str) -> None:
    cmd = compile_command("!shell printf '%s\\n' {{ matches }} {{ jail }}", W)
    argv = cmd.render(validate_vars({"matches": value, "jail": "ssh"}))
    assert argv[:2] == ["/bin/sh", "-c"]
    out = _sh(argv)
    assert "PWNED" not in out.replace(value, "")
    assert out == value + "\nssh\n"


def test_shell_mode_does_not_double_quote_q() -> None:
    cmd = compile_command("!shell printf %s {{ matches|q }}", W)
    assert _sh(cmd.render(validate_vars({"matches": "a b"}))) == "a b"


@pytest.mark.parametrize("text", ["!shell echo \"{{ matches }}\"", "!shell echo '{{ matches }}'",
                                  "!shell echo ${X:-{{ matches }}}", "!shell cat <<EOF\n{{ matches }}\nEOF"])
def test_shell_mode_refuses_values_where_quoting_fails(text: str) -> None:
    with pytest.raises(TemplateError):
        compile_command(text, W)


def test_whole_value_shell_script() -> None:
    (cmd,) = compile_commands("if true; then\n  echo {{ matches }}\nfi", "f", "k", shell=True)
    assert _sh(cmd.render(validate_vars({"matches": "$(id)"}))) == "$(id)\n"
    assert shlex.split(cmd.render(validate_vars({"matches": "x"}))[2])[-2:] == ["x", "fi"]


@pytest.mark.parametrize("value", ["60\x1c\x1c", "\x1f60", "٦٠", "6\u00a00", "60\n", "0x3c"])
def test_integer_variables_take_ascii_digits_only_found_by_fuzzing(value: str) -> None:
    with pytest.raises(VarError, match="bantime"):
        validate_vars({"ip": "192.0.2.1", "bantime": value})
    assert validate_vars({"ip": "192.0.2.1", "bantime": " 60 "})["bantime"] == 60
