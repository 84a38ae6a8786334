"""Layered INI files as fail2ban reads them: ``X.conf < X.d/*.conf < X.local < X.d/*.local``.

Semantics follow fail2ban 1.0 (its ``SafeConfigParserWithIncludes`` over Python's ``ConfigParser``):

- ``#`` and ``;`` start a comment line (also when indented); ``;`` after whitespace starts an inline
  comment; ``#`` inside a value is kept (regexes need it).
- ``key = value`` or ``key: value``; a line indented deeper than its key continues the value (joined with
  ``\\n``); blank lines inside a value are kept, trailing ones dropped.
- Option names are **case-insensitive** (lower-cased, as ConfigParser's ``optionxform`` does, and so are
  ``%(name)s`` references and ``vars``); section names are case-sensitive; ``[DEFAULT]`` is exact.
- The same section twice, or the same key twice in one section, in *one* file is an error.
- ``[INCLUDES] before = …`` / ``after = …`` (one file per line, relative to the including file's
  directory; each included ``Y.conf`` is followed by ``Y.local`` when it exists); a missing include is
  skipped, as fail2ban does (``common.local`` is optional); an include cycle is an error (fail2ban
  silently skips it).
- A later file overrides single keys; the value it replaced is kept in section ``KNOWN/<section>`` and
  can be referred to as ``%(known/key)s``.
- ``%(name)s`` interpolation looks in ``vars``, then the section, then ``[DEFAULT]``; ``%(sec/name)s``
  reads another section, ``%(default/name)s`` the defaults; ``%%`` is a literal ``%``.

This module does no I/O beyond reading the files it is asked to read.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT = "DEFAULT"
INCLUDES = "INCLUDES"
KNOWN_PREFIX = "KNOWN/"
MAX_INTERPOLATION_DEPTH = 10

_SECTION_RE = re.compile(r"\[(?P<name>.+)\]")
_OPTION_RE = re.compile(r"(?P<key>.*?)\s*[=:]\s*(?P<value>.*)$")
_REF_RE = re.compile(r"%\(([^)]+)\)s")


@dataclass(frozen=True)
class Value:
    """A raw value and where it came from (``line`` is the key's line; ``lines`` one per text line)."""

    text: str
    path: str
    line: int
    lines: tuple[int, ...] = field(default=(), compare=False)

    def line_of(self, index: int) -> int:
        """Source line of the ``index``-th line of ``text`` (the key's line when unknown)."""
        return self.lines[index] if 0 <= index < len(self.lines) else self.line


class IniError(ValueError):
    """A configuration error; ``str()`` is ``path:line: [section] key: reason``."""

    def __init__(self, path: str, line: int, section: str, key: str, reason: str) -> None:
        self.path = path
        self.line = line
        self.section = section
        self.key = key
        self.reason = reason
        super().__init__(f"{path}:{line}: [{section}] {key}: {reason}")

    @classmethod
    def at(cls, value: Value, section: str, key: str, reason: str) -> IniError:
        return cls(value.path, value.line, section, key, reason)


def _key(name: str) -> str:
    return name.strip().lower()


class Ini:
    """Merged sections of one or more files. ``sections`` is ordered and includes ``DEFAULT``."""

    def __init__(self, paths: tuple[str, ...] = ()) -> None:
        self.sections: dict[str, dict[str, Value]] = {}
        #: The files read, in the order they were merged.
        self.paths: tuple[str, ...] = paths

    # -- lookup ----------------------------------------------------------------------------------------
    def has_section(self, section: str) -> bool:
        return section in self.sections

    def has(self, section: str, key: str) -> bool:
        """True when ``key`` is set in ``section`` or in ``[DEFAULT]``."""
        return self.value(section, key) is not None

    def value(self, section: str, key: str) -> Value | None:
        """The raw (not interpolated) value from ``section``, else ``[DEFAULT]``; None when absent."""
        k = _key(key)
        own = self.sections.get(section, {}).get(k)
        if own is not None:
            return own
        return self.sections.get(DEFAULT, {}).get(k)

    def options(self, section: str, *, with_default: bool = False) -> list[str]:
        """Key names of ``section`` in file order (then ``[DEFAULT]``'s, when asked)."""
        names = list(self.sections.get(section, {}))
        if with_default and section != DEFAULT:
            names += [k for k in self.sections.get(DEFAULT, {}) if k not in names]
        return names

    def user_sections(self) -> list[str]:
        """Section names other than DEFAULT, INCLUDES and KNOWN/*, in order."""
        return [s for s in self.sections if s not in (DEFAULT, INCLUDES) and not s.startswith(KNOWN_PREFIX)]

    def get(
        self,
        section: str,
        key: str,
        default: str | None = None,
        *,
        vars: Mapping[str, str] | None = None,
    ) -> str:
        """The interpolated value; ``default`` (returned as is) when absent, else IniError."""
        lvars = {_key(k): v for k, v in (vars or {}).items()}
        k = _key(key)
        if k in lvars:
            return self._interpolate(section, k, lvars[k], None, lvars, 1)
        raw = self.value(section, k)
        if raw is None:
            if default is not None:
                return default
            where = self.paths[0] if self.paths else "<ini>"
            raise IniError(where, 0, section, k, "missing")
        return self._interpolate(section, k, raw.text, raw, lvars, 1)

    def interpolate(self, section: str, key: str, value: Value, *, vars: Mapping[str, str] | None = None) -> str:
        """Interpolate ``value`` (from anywhere) as if it were ``key`` of ``section``."""
        lvars = {_key(k): v for k, v in (vars or {}).items()}
        return self._interpolate(section, _key(key), value.text, value, lvars, 1)

    # -- interpolation ---------------------------------------------------------------------------------
    def _lookup_ref(
        self, section: str, name: str, lvars: Mapping[str, str]
    ) -> tuple[str, Value | None] | None:
        if name in lvars:
            return lvars[name], None
        if name == "__name__":
            return section, None
        if "/" in name:
            sec, _, opt = name.partition("/")
            seclow = sec.lower()
            found: Value | None = None
            if seclow == "known":
                found = self.sections.get(KNOWN_PREFIX + section, {}).get(opt)
            elif seclow != "default":
                found = self.sections.get(sec, {}).get(opt)
            if found is None:
                found = self.sections.get(DEFAULT, {}).get(opt)
            return (found.text, found) if found is not None else None
        raw = self.value(section, name)
        return (raw.text, raw) if raw is not None else None

    def _interpolate(
        self, section: str, key: str, text: str, origin: Value | None, lvars: Mapping[str, str], depth: int
    ) -> str:
        if "%" not in text:
            return text

        def fail(reason: str) -> IniError:
            if origin is not None:
                return IniError.at(origin, section, key, reason)
            where = self.paths[0] if self.paths else "<ini>"
            return IniError(where, 0, section, key, reason)

        if depth > MAX_INTERPOLATION_DEPTH:
            raise fail(f"interpolation deeper than {MAX_INTERPOLATION_DEPTH} levels (recursive reference?)")
        out: list[str] = []
        pos = 0
        while True:
            i = text.find("%", pos)
            if i < 0:
                out.append(text[pos:])
                break
            out.append(text[pos:i])
            nxt = text[i + 1 : i + 2]
            if nxt == "%":
                out.append("%")
                pos = i + 2
                continue
            m = _REF_RE.match(text, i)
            if m is None:
                raise fail(f"'%' must be followed by '%' or '(name)s' at {text[i:i + 20]!r}")
            name = m.group(1).strip()
            if "/" not in name:
                name = _key(name)
            else:
                sec, _, opt = name.partition("/")
                name = f"{sec}/{_key(opt)}"
            found = self._lookup_ref(section, name, lvars)
            if found is None:
                raise fail(f"bad interpolation: no option {name!r} (referenced as %({m.group(1)})s)")
            sub_text, sub_origin = found
            out.append(self._interpolate(section, key, sub_text, origin or sub_origin, lvars, depth + 1))
            pos = m.end()
        return "".join(out)


# -- parsing ---------------------------------------------------------------------------------------------
_Parsed = dict[str, dict[str, Value]]


def _strip_inline_comment(line: str) -> tuple[str, bool]:
    """Cut a ``;`` comment that starts the line or follows whitespace; say whether one was cut."""
    idx = -1
    while True:
        idx = line.find(";", idx + 1)
        if idx < 0:
            return line, False
        if idx == 0 or line[idx - 1].isspace():
            return line[:idx], True


def parse_text(text: str, path: str) -> _Parsed:
    """Parse one file's text (no includes, no layering)."""
    sections: _Parsed = {}
    cur: dict[str, Value] | None = None
    cur_name = ""
    seen_sections: set[str] = set()
    key: str | None = None
    parts: list[str] = []
    part_lines: list[int] = []
    key_line = 0
    indent_level = 0

    def flush() -> None:
        nonlocal key
        if cur is not None and key is not None:
            while parts and parts[-1] == "":
                parts.pop()
                part_lines.pop()
            cur[key] = Value("\n".join(parts), path, key_line, tuple(part_lines))
        key = None

    for lineno, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if stripped.startswith(("#", ";")):
            continue
        body, had_comment = _strip_inline_comment(raw)
        content = body.strip()
        if not content:
            if not had_comment and key is not None:
                parts.append("")
                part_lines.append(lineno)
            continue
        indent = len(raw) - len(raw.lstrip())
        if key is not None and indent > indent_level:
            parts.append(content)
            part_lines.append(lineno)
            continue
        flush()
        indent_level = indent
        sm = _SECTION_RE.fullmatch(content)
        if sm:
            cur_name = sm.group("name")
            if cur_name in seen_sections:
                raise IniError(path, lineno, cur_name, "-", "section appears twice in this file")
            seen_sections.add(cur_name)
            cur = sections.setdefault(cur_name, {})
            continue
        if cur is None:
            raise IniError(path, lineno, "-", "-", f"line before any [section]: {content[:40]!r}")
        om = _OPTION_RE.match(content)
        if om is None or not om.group("key").strip():
            raise IniError(path, lineno, cur_name, "-", f"expected 'key = value', got {content[:40]!r}")
        k = _key(om.group("key"))
        if k in cur:
            first = cur[k].line
            raise IniError(path, lineno, cur_name, k, f"key appears twice in this section (first at line {first})")
        key = k
        key_line = lineno
        parts = [om.group("value").strip()]
        part_lines = [lineno]
    flush()
    return sections


def _read_file(path: Path) -> _Parsed:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise IniError(str(path), 0, "-", "-", f"not UTF-8: {exc.reason}") from None
    except OSError as exc:
        raise IniError(str(path), 0, "-", "-", f"cannot read: {exc.strerror}") from None
    return parse_text(text, str(path))


def _with_local(path: Path) -> list[Path]:
    local = path.with_suffix(".local")
    return [path, local] if path.suffix == ".conf" and local.is_file() else [path]


def _expand_includes(path: Path, chain: tuple[Path, ...], out: list[tuple[Path, _Parsed]]) -> None:
    """Append ``path`` and its includes (before, itself, after) to ``out``, depth first."""
    parsed = _read_file(path)
    inc = parsed.get(INCLUDES, {})
    here = Ini((str(path),))
    here.sections = parsed
    for which in ("before", "after"):
        if which == "after":
            out.append((path, parsed))
        spec = inc.get(which)
        if spec is None:
            continue
        for name in here.get(INCLUDES, which).split("\n"):
            name = name.strip()
            if not name:
                continue
            target = Path(name) if Path(name).is_absolute() else path.parent / name
            for one in _with_local(target):
                resolved = one.resolve()
                if resolved in {p.resolve() for p in chain + (path,)}:
                    cycle = " -> ".join(str(p) for p in chain + (path, one))
                    raise IniError.at(spec, INCLUDES, which, f"include cycle: {cycle}")
                if one.is_file():
                    _expand_includes(one, chain + (path,), out)


def layer_files(path: Path) -> list[Path]:
    """The existing files of ``path``'s layers, in merge order (without includes)."""
    base = path.with_suffix("") if path.suffix in (".conf", ".local") else path
    ddir = Path(str(base) + ".d")
    candidates = [base.with_name(base.name + ".conf")]
    candidates += sorted(ddir.glob("*.conf")) if ddir.is_dir() else []
    candidates.append(base.with_name(base.name + ".local"))
    candidates += sorted(ddir.glob("*.local")) if ddir.is_dir() else []
    return [p for p in candidates if p.is_file()]


def merge(parsed: list[tuple[Path, _Parsed]]) -> Ini:
    """Merge parsed files in order: later keys override, replaced values go to ``KNOWN/<section>``."""
    ini = Ini(tuple(str(p) for p, _ in parsed))
    for _path, sections in parsed:
        for name, opts in sections.items():
            have = ini.sections.get(name)
            if have is None:
                ini.sections[name] = dict(opts)
                continue
            if name != DEFAULT:
                known = {k: have[k] for k in opts if k in have}
                if known:
                    ini.sections.setdefault(KNOWN_PREFIX + name, {}).update(known)
            have.update(opts)
    return ini


def read_layered(path: Path) -> Ini:
    """Read ``X.conf`` (``path``; ``X`` or ``X.local`` also accepted) with its layers and includes."""
    files = layer_files(path)
    if not files:
        raise IniError(str(path), 0, "-", "-", "no such configuration file (nor .local / .d/ layer)")
    parsed: list[tuple[Path, _Parsed]] = []
    for f in files:
        _expand_includes(f, (), parsed)
    return merge(parsed)


def read_files(*paths: Path) -> Ini:
    """Read exactly these files (with their includes, without layers), merged in order."""
    parsed: list[tuple[Path, _Parsed]] = []
    for f in paths:
        _expand_includes(f, (), parsed)
    return merge(parsed)


# -- name[key=value, …] ----------------------------------------------------------------------------------
_SPEC_RE = re.compile(r"^\s*(?P<name>[^\[\]\s]+)\s*(?:\[(?P<opts>.*)\])?\s*$", re.DOTALL)
_ARG_RE = re.compile(
    r"""\s*(?P<key>[\w\-.]+)\s*=\s*(?:"(?P<dq>[^"]*)"|'(?P<sq>[^']*)'|(?P<bare>(?:[^,\]"'\s][^,\]]*)?))\s*(?P<sep>,|\]\s*\[|$)""",
    re.DOTALL,
)


def parse_args_spec(text: str) -> tuple[str, dict[str, str]]:
    """Split fail2ban's ``name[key=value, key2="quoted, with comma", key3='x'][key4=y]``.

    Values are stripped; quotes may hold commas and brackets. Keys keep their case (they are matched
    case-insensitively by ``Ini.get(vars=…)``). Raises ValueError on malformed text.
    """
    m = _SPEC_RE.match(text)
    if m is None:
        raise ValueError(f"expected name[key=value, ...], got {text.strip()[:60]!r}")
    name, opts = m.group("name"), m.group("opts")
    args: dict[str, str] = {}
    if opts is None or not opts.strip():
        return name, args
    pos = 0
    while pos < len(opts):
        if not opts[pos:].strip(" \t\n,"):
            break
        am = _ARG_RE.match(opts, pos)
        if am is None or am.end() == pos:
            raise ValueError(f"{name}: expected key=value at {opts[pos:pos + 25].strip()!r}")
        val = next(v for v in am.group("dq", "sq", "bare") if v is not None)
        args[am.group("key")] = val.strip()
        pos = am.end()
        if am.group("sep") == "":
            break
    return name, args
