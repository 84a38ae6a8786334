"""Action command templates → argument vectors, with no way for a value to add an argument or a command.

A template line is **split into words first** (shell-like quoting, at load time), **then each word is
rendered** with jinja2 in a sandbox with ``StrictUndefined``. The result is an ``argv`` list run without a
shell, so whatever a value holds (``;``, ``$(…)``, spaces, newlines) stays inside the one word it was put in.

Rules (docs/actions.md has the long form):

- Words split on blanks; ``'…'`` and ``"…"`` group blanks into one word; ``\\`` escapes one character
  outside single quotes. A jinja region (``{{ … }}``, ``{% … %}``, ``{# … #}``) never splits, and is
  recognised inside quotes too. A ``{% if %}`` block must therefore sit inside one word.
- A rendered word may not start with ``-`` unless its template does (a value never becomes an option),
  except for a plain negative number; it may not hold a NUL byte.
- ``{{ expr|args }}`` as a whole word expands to *several* words (``shlex.split`` of the result), zero when
  empty. The expression may use only configuration values (``[Init]`` and the jail's action arguments),
  never a documented variable but ``family`` (checked at load time), so only the admin's text can add
  arguments.
- A first word ``!try`` marks a command whose failure is reported but does not fail the phase.
- PortSentry's ``$TARGET$``, ``$PORT$`` and ``$MODE$`` are translated to ``{{ ip }}``, ``{{ port }}`` and
  ``{{ mode }}`` before splitting.
- A first word ``@name`` is an internal command (handled by responder.adapters.internal).
- Shell templates (a first word ``!shell``, or the action's ``shell = yes``) run as ``/bin/sh -c SCRIPT``;
  every ``{{ … }}`` output is passed through ``shlex.quote`` automatically, and a ``{{ … }}`` inside quotes,
  inside ``${…}`` or in a template with a here-document is refused at load time, since quoting would not
  hold there.

Rendering takes variables that were validated before (responder.actions.variables: a ban's BanVars, the
configuration's validate_vars); this module holds the template language alone.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from jinja2 import StrictUndefined, meta
from jinja2 import TemplateError as JinjaTemplateError
from jinja2.sandbox import SandboxedEnvironment

from portsentinel.responder.actions.variables import DOCUMENTED_VARS

SHELL = ("/bin/sh", "-c")
SHELL_MARK = "!shell"
INTERNAL_PREFIX = "@"

_SPLAT_RE = re.compile(r"\|\s*args\s*\}\}\Z")
TRY_MARK = "!try"
#: PortSentry's KILL_* placeholders, translated to jinja before a line is split.
PORTSENTRY_TOKENS = {"$TARGET$": "{{ ip }}", "$PORT$": "{{ port|default('') }}", "$MODE$": "{{ mode|default('') }}"}
_NEGNUM_RE = re.compile(r"-\d+\Z")


@dataclass(frozen=True)
class Where:
    """Where a template came from: ``path:line: key``."""

    path: str
    line: int
    key: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.key}"


class TemplateError(ValueError):
    """A template that cannot be compiled; ``str()`` starts with ``path:line: key``."""

    def __init__(self, where: Where, reason: str) -> None:
        super().__init__(f"{where}: {reason}")
        self.where = where
        self.reason = reason


class RenderError(ValueError):
    """A template that cannot be rendered with the given variables (missing or invalid value)."""

    def __init__(self, where: Where, reason: str) -> None:
        super().__init__(f"{where}: {reason}")
        self.where = where
        self.reason = reason


# -- jinja ------------------------------------------------------------------------------------------------
class Quoted(str):
    """Text already quoted for the shell by ``|q``; the shell finalizer leaves it alone."""

    __slots__ = ()


def _q(value: object) -> Quoted:
    return value if isinstance(value, Quoted) else Quoted(shlex.quote(str(value)))


def _shell_finalize(value: object) -> object:
    return _q(value)


def _args_filter(value: object) -> str:
    # Only reachable when |args is used inside a larger word: then it is just the text.
    return str(value)


def _env(shell: bool) -> SandboxedEnvironment:
    env = SandboxedEnvironment(
        undefined=StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        finalize=_shell_finalize if shell else None,
    )
    env.filters["q"] = _q
    env.filters["args"] = _args_filter
    return env


_ENV = _env(False)
_SHELL_ENV = _env(True)


# -- splitting --------------------------------------------------------------------------------------------
_JINJA_CLOSE = {"{": "}}", "%": "%}", "#": "#}"}


def _jinja_end(text: str, i: int, where: Where) -> int:
    """``text[i:i+2]`` opens a jinja region; return the index just past its close."""
    close = _JINJA_CLOSE[text[i + 1]]
    j = i + 2
    quote = ""
    while j < len(text):
        c = text[j]
        if quote:
            if c == "\\":
                j += 2
                continue
            if c == quote:
                quote = ""
        elif c in "'\"" and close != "#}":
            quote = c
        elif text.startswith(close, j):
            return j + 2
        j += 1
    raise TemplateError(where, f"unterminated {text[i:i + 2]} at {text[i:i + 30]!r}")


def _opens_jinja(text: str, i: int) -> bool:
    return text[i] == "{" and i + 1 < len(text) and text[i + 1] in _JINJA_CLOSE


def split_words(line: str, where: Where) -> list[str]:
    """Split one command line into word templates (quotes removed, jinja regions kept whole)."""
    words: list[str] = []
    cur: list[str] = []
    have = False  # an empty quoted word '' still counts
    i, n = 0, len(line)
    quote = ""
    while i < n:
        c = line[i]
        if _opens_jinja(line, i):
            end = _jinja_end(line, i, where)
            cur.append(line[i:end])
            have = True
            i = end
            continue
        if quote == "'":
            if c == "'":
                quote = ""
            else:
                cur.append(c)
        elif quote == '"':
            if c == '"':
                quote = ""
            elif c == "\\" and i + 1 < n and line[i + 1] in '"\\$`':
                cur.append(line[i + 1])
                i += 1
            else:
                cur.append(c)
        elif c in "'\"":
            quote = c
            have = True
        elif c == "\\":
            if i + 1 >= n:
                raise TemplateError(where, "trailing backslash")
            cur.append(line[i + 1])
            have = True
            i += 1
        elif c in " \t\r\n":
            if have:
                words.append("".join(cur))
                cur, have = [], False
        else:
            cur.append(c)
            have = True
        i += 1
    if quote:
        raise TemplateError(where, f"unterminated {quote} quote")
    if have:
        words.append("".join(cur))
    return words


def _check_shell_template(text: str, where: Where) -> None:
    """Refuse ``{{ … }}`` where shlex.quote would not protect it (quotes, ``${…}``, here-documents)."""
    quote = ""
    braces = 0
    has_expr = False
    i, n = 0, len(text)
    while i < n:
        if _opens_jinja(text, i):
            end = _jinja_end(text, i, where)
            if text[i + 1] == "{":
                has_expr = True
                if quote or braces:
                    ctx = "quotes" if quote else "${...}"
                    raise TemplateError(
                        where, f"{text[i:end]} inside {ctx}: values are quoted for the shell, leave them bare"
                    )
            i = end
            continue
        c = text[i]
        if quote == "'":
            if c == "'":
                quote = ""
        elif quote == '"':
            if c == "\\":
                i += 1
            elif c == '"':
                quote = ""
        elif c in "'\"":
            quote = c
        elif c == "\\":
            i += 1
        elif text.startswith("${", i):
            braces += 1
            i += 1
        elif c == "}" and braces:
            braces -= 1
        i += 1
    if has_expr and "<<" in text:
        raise TemplateError(where, "here-documents cannot carry values in a shell template")


# -- commands ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Word:
    source: str
    template: Any  # jinja2.Template, or None for a literal word
    splat: bool  # a whole-word {{ …|args }}: expands to several words


@dataclass(frozen=True)
class Command:
    """One compiled command. ``render(vars)`` returns its argv."""

    where: Where
    words: tuple[_Word, ...] = ()
    script: Any = None  # jinja2.Template of a shell script
    source: str = ""
    #: False for a ``!try`` command: its failure is reported but does not fail the phase.
    check: bool = True

    @property
    def shell(self) -> bool:
        return self.script is not None

    @property
    def internal(self) -> str | None:
        """``name`` for an internal ``@name`` command, else None."""
        if self.words and self.words[0].template is None and self.words[0].source.startswith(INTERNAL_PREFIX):
            return self.words[0].source[1:]
        return None

    def variables(self) -> frozenset[str]:
        """Names the template refers to (best effort, for check-config)."""
        names: set[str] = set()
        sources = [self.source] if self.shell else [w.source for w in self.words]
        for src in sources:
            try:
                names |= meta.find_undeclared_variables(_ENV.parse(src))
            except JinjaTemplateError:
                pass
        return frozenset(names)

    def render(self, ctx: Mapping[str, object]) -> list[str]:
        """Render to an argv with variables validated before (responder.actions.variables)."""
        if self.script is not None:
            return [*SHELL, self._call(self.script, ctx), "portsentinel-action"]
        argv: list[str] = []
        for word in self.words:
            if word.template is None:
                argv.append(word.source)
                continue
            if word.splat:
                argv.extend(self._splat(word.template, ctx))
                continue
            text = self._call(word.template, ctx)
            if text.startswith("-") and not word.source.startswith("-") and not _NEGNUM_RE.match(text):
                raise RenderError(self.where, f"{word.source} rendered to an option-like word {text[:40]!r}")
            argv.append(text)
        for arg in argv:
            if "\x00" in arg:
                raise RenderError(self.where, "NUL byte in a rendered word")
        return argv

    def _splat(self, template: Any, ctx: Mapping[str, object]) -> list[str]:
        text = self._call(template, ctx)
        try:
            return shlex.split(text)
        except ValueError as exc:
            raise RenderError(self.where, f"|args: {exc}") from None

    def _call(self, template: Any, ctx: Mapping[str, object]) -> str:
        try:
            return str(template.render(ctx))
        except JinjaTemplateError as exc:
            raise RenderError(self.where, f"{type(exc).__name__}: {exc}") from None


def _compile(env: SandboxedEnvironment, source: str, where: Where) -> Any:
    try:
        return env.from_string(source)
    except JinjaTemplateError as exc:
        raise TemplateError(where, f"{type(exc).__name__}: {exc}") from None


def compile_command(text: str, where: Where, *, shell: bool = False, program: bool = True) -> Command:
    """Compile one command line (or, with ``shell``, one shell script) into a Command.

    ``program`` requires the first word to be literal text (off for word lists that are not commands).
    """
    stripped = text.strip()
    check = True
    if not shell and (stripped == TRY_MARK or stripped.startswith((TRY_MARK + " ", TRY_MARK + "\t"))):
        check = False
        stripped = stripped[len(TRY_MARK):].strip()
    for token, expr in PORTSENTRY_TOKENS.items():
        stripped = stripped.replace(token, expr)
    if not shell and (stripped == SHELL_MARK or stripped.startswith(SHELL_MARK + " ")
                      or stripped.startswith(SHELL_MARK + "\t")):
        shell = True
        stripped = stripped[len(SHELL_MARK):].strip()
    if not stripped:
        raise TemplateError(where, "empty command")
    if shell:
        _check_shell_template(stripped, where)
        return Command(where, script=_compile(_SHELL_ENV, stripped, where), source=stripped, check=check)
    words: list[_Word] = []
    for src in split_words(stripped, where):
        if "{" not in src:
            words.append(_Word(src, None, False))
            continue
        compiled = _compile(_ENV, src, where)
        splat = bool(src.startswith("{{") and _jinja_end(src, 0, where) == len(src) and _SPLAT_RE.search(src))
        if splat:
            used = meta.find_undeclared_variables(_ENV.parse(src)) & (DOCUMENTED_VARS - {"family"})
            if used:
                raise TemplateError(where, f"{src}: |args may only expand configuration values, not "
                                           f"{', '.join(sorted(used))}")
        words.append(_Word(src, compiled, splat))
    if not words:
        raise TemplateError(where, "empty command")
    if program and words[0].template is not None:
        raise TemplateError(where, "the program (first word) must be literal text")
    return Command(where, tuple(words), source=stripped, check=check)


def logical_lines(text: str) -> list[tuple[int, str]]:
    """Split a multi-line value into (index of first text line, command) pairs.

    Blank lines and lines starting with ``#`` are skipped; a line ending in ``\\`` continues on the next.
    """
    out: list[tuple[int, str]] = []
    buf: list[str] = []
    start = 0
    for idx, raw in enumerate(text.split("\n")):
        line = raw.strip()
        if not buf:
            start = idx
            if not line or line.startswith("#"):
                continue
        if line.endswith("\\") and not line.endswith("\\\\"):
            buf.append(line[:-1])
            continue
        buf.append(line)
        out.append((start, " ".join(buf)))
        buf = []
    if buf:
        out.append((start, " ".join(buf)))
    return out


def compile_commands(
    text: str, path: str, key: str, lines: Sequence[int] = (), *, shell: bool = False
) -> list[Command]:
    """Compile a multi-line value: one command per logical line, or one script when ``shell``.

    ``lines`` maps each text line of ``text`` to its source line (first entry used when missing).
    """

    def line_of(i: int) -> int:
        if not lines:
            return 0
        return lines[i] if i < len(lines) else lines[0]

    if shell:
        if not text.strip():
            return []
        return [compile_command(text, Where(path, line_of(0), key), shell=True)]
    return [compile_command(cmd, Where(path, line_of(i), key)) for i, cmd in logical_lines(text)]
