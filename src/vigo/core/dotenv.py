"""Dotenv as sops writes it, and as docker compose reads it. Pure.

sops (dotenv store) splits each line on the first `=` and escapes only newlines, as `\\n`;
quotes are part of the value. Compose's parser expands `$VAR`, strips quotes and ` #` comments
in unquoted values, so vigo rewrites every value double-quoted with `\\`, `"`, `$` and newline
escaped: the value sops holds reaches the container byte for byte.
"""

from __future__ import annotations

import re

KEY = r"^[A-Za-z_][A-Za-z0-9_.-]*$"  # compiled at the first file read (an idle run reads none)


class DotenvError(ValueError):
    pass


def parse_sops(text: str) -> list[tuple[str, str]]:
    """KEY=VALUE pairs of a decrypted sops dotenv document (comments and blanks skipped)."""
    pairs: list[tuple[str, str]] = []
    for number, line in enumerate(text.split("\n"), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not re.match(KEY, key):
            raise DotenvError(f"line {number}: not KEY=VALUE")
        pairs.append((key, value.replace("\\n", "\n")))
    return pairs


def quote(value: str) -> str:
    return '"' + (value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$")
                  .replace("\n", "\\n")) + '"'


def parse_written(text: str) -> list[tuple[str, str]]:
    """Read back a file written by format_for_compose."""
    pairs = []
    escapes = {"n": "\n", "\\": "\\", '"': '"', "$": "$"}
    for line in text.split("\n"):  # not splitlines(): values may hold \x85, \u2028, ...
        key, sep, value = line.partition("=")
        if not sep:
            continue
        if len(value) >= 2 and value[0] == value[-1] == '"':
            out, i, body = [], 0, value[1:-1]
            while i < len(body):
                if body[i] == "\\" and i + 1 < len(body):
                    out.append(escapes.get(body[i + 1], body[i + 1]))
                    i += 2
                else:
                    out.append(body[i])
                    i += 1
            value = "".join(out)
        pairs.append((key, value))
    return pairs


def format_for_compose(pairs: list[tuple[str, str]]) -> str:
    return "".join(f"{key}={quote(value)}\n" for key, value in pairs)


def key_names(text: str) -> list[str]:
    """Variable names of an encrypted (or plain) dotenv file, without sops metadata keys."""
    names = []
    for line in text.splitlines():
        key, sep, _ = line.partition("=")
        if sep and re.match(KEY, key) and not key.startswith("sops_"):
            names.append(key)
    return names
