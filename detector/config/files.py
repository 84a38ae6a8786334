"""The detector's configuration files: the configuration itself (either format, detected by content) and
PortSentry's ignore file. The only module of the configuration that touches the file system.
"""

from __future__ import annotations

import os

from portsentinel.detector.config.detect import parse_any
from portsentinel.detector.config.model import ConfigError, DetectorConfig, IPNetwork
from portsentinel.detector.config.values import parse_network


def _read_text(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except UnicodeDecodeError as err:
        raise ConfigError(path, 0, "", f"not UTF-8 text ({err.reason} at byte {err.start})") from None
    except OSError as err:
        raise ConfigError(path, 0, "", f"cannot read: {err.strerror or err}") from None


def read_ignore_file(path: str) -> tuple[tuple[IPNetwork, ...], list[str]]:
    """PortSentry's ignore file: one address or network per line, ``#`` comments, blank lines.

    As PortSentry does, ``a.b.c.d/nn`` with host bits set is masked to its network (with a warning).
    A missing file is a warning; an unreadable file or a bad line is a ConfigError.
    """
    if not os.path.exists(path):
        return (), [f"{path}: ignore file not found; no addresses loaded from it"]
    networks: dict[IPNetwork, None] = {}
    warnings: list[str] = []
    for number, raw in enumerate(_read_text(path).split("\n"), 1):
        entry = raw.split("#", 1)[0].strip()
        if not entry:
            continue
        if len(entry.split()) > 1:
            raise ConfigError(path, number, entry.split()[0], "one address or network per line")
        try:
            network = parse_network(entry)
        except ValueError:
            try:
                network = parse_network(entry, strict=False)
            except ValueError as err:
                raise ConfigError(path, number, entry[:60], str(err)) from None
            warnings.append(f"{path}:{number}: {entry}: host bits set; ignoring the network {network}")
        networks[network] = None
    return tuple(networks), warnings


def load_config(path: str) -> tuple[DetectorConfig, list[str]]:
    """Read a configuration file in either format (detected by content), then its ignore file.

    The ignore file's networks are added to ``ignore``; a relative ``ignore_file`` is taken relative to the
    configuration file's directory and stored resolved. Raises ConfigError; returns the warnings.
    """
    parsed = parse_any(_read_text(path), path)
    config, warnings = parsed.config, parsed.warnings
    config.source = path
    if config.ignore_file:
        line, key = parsed.where.get("ignore_file", (0, "ignore_file"))
        ignore_path = os.path.join(os.path.dirname(path), config.ignore_file)
        config.ignore_file = ignore_path
        if not os.path.exists(ignore_path):
            where = f"{path}:{line}" if line else path
            warnings.append(f"{where}: {key}: {ignore_path} not found; no addresses loaded from it")
        else:
            networks, more = read_ignore_file(ignore_path)
            warnings.extend(more)
            config.ignore = tuple(dict.fromkeys(config.ignore + networks))
    return config, warnings
