"""Where a key sits in a TOML file, so that errors can name the line.

``tomllib`` reports the line of a syntax error but knows nothing of lines once the text
parsed: a value that is valid TOML yet wrong for us (``budget = "fast"``) has no position.
:class:`TomlPositions` scans the raw text once (after ``tomllib`` accepted it) and maps
every key path to the line it was written on::

    pos = TomlPositions(text)
    pos.line("daemon", "budget")            # [daemon] budget = ...
    pos.line("oom", 1, "args", "target")    # the second [[oom]], args = { target = ... }
    pos.line("process", 0, "program", 2)    # the third element of an array

A path that was not written (a default, a key of an implicit table) gives the line of its
nearest written ancestor, or None. The scanner is lenient: it never raises, since it only
ever sees text ``tomllib`` already parsed.

:func:`read_toml` and :func:`load_toml` are the one way scenarios and configs are read:
every fault of the text itself (not UTF-8, not TOML, numbers past Python's digit limit,
nesting deeper than :data:`MAX_DEPTH`) becomes one :class:`ConfigError` line naming the
file and the line, never a traceback.
"""

from __future__ import annotations

import re
import tomllib
from typing import Any, Final

from oomkit.errors import ConfigError

#: Arrays and tables nested deeper than this are refused: no scenario or config needs
#: more than four, and the recursive parsers (tomllib, the scanner below) would otherwise
#: end in RecursionError near Python's stack limit.
MAX_DEPTH: Final = 32

Path = tuple[str | int, ...]

_BARE: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
_VALUE_END: Final = frozenset(",]}#\n")


class _Scanner:
    __slots__ = ("aot", "i", "line", "lines", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self.i = 0
        self.line = 1
        self.lines: dict[Path, int] = {}
        self.aot: dict[Path, int] = {}  # array-of-tables path -> number of entries so far

    # -- characters ------------------------------------------------------------------------
    def peek(self, n: int = 1) -> str:
        return self.text[self.i : self.i + n]

    def advance(self, n: int = 1) -> None:
        chunk = self.text[self.i : self.i + n]
        self.line += chunk.count("\n")
        self.i += n

    def skip_blank(self, newlines: bool) -> None:
        """Spaces, tabs, comments, and (inside arrays or between statements) newlines."""
        while self.i < len(self.text):
            c = self.text[self.i]
            if c in " \t\r" or (newlines and c == "\n"):
                self.advance()
            elif c == "#":
                end = self.text.find("\n", self.i)
                self.advance((end if end >= 0 else len(self.text)) - self.i)
            else:
                return

    def skip_string(self) -> str:
        """Skips a string of any of the four kinds and returns its (roughly unescaped) text."""
        for quote in ('"""', "'''"):
            if self.peek(3) == quote:
                self.advance(3)
                end = self.text.find(quote, self.i)
                while quote == '"""' and end > 0 and self._escaped(end):
                    end = self.text.find(quote, end + 1)
                end = len(self.text) if end < 0 else end
                # A closing delimiter may be followed by one or two more quotes of the string.
                while self.text[end + 3 : end + 4] == quote[0]:
                    end += 1
                body = self.text[self.i : end]
                self.advance(end + 3 - self.i)
                return body
        quote = self.text[self.i]
        self.advance()
        start = self.i
        while self.i < len(self.text) and self.text[self.i] not in (quote, "\n"):
            if quote == '"' and self.text[self.i] == "\\":
                self.advance()
            self.advance()
        body = self.text[start : self.i]
        self.advance()
        return body

    def _escaped(self, pos: int) -> bool:
        n = 0
        while pos - 1 - n >= 0 and self.text[pos - 1 - n] == "\\":
            n += 1
        return n % 2 == 1

    # -- keys --------------------------------------------------------------------------------
    def key(self) -> list[str]:
        """A dotted key: ``a``, ``"a.b"``, ``a . 'b' . c``."""
        parts: list[str] = []
        while self.i < len(self.text):
            self.skip_blank(newlines=False)
            c = self.peek()
            if c in ('"', "'"):
                parts.append(self.skip_string())
            else:
                start = self.i
                while self.i < len(self.text) and self.text[self.i] in _BARE:
                    self.advance()
                if self.i == start:
                    return parts
                parts.append(self.text[start : self.i])
            self.skip_blank(newlines=False)
            if self.peek() != ".":
                return parts
            self.advance()
        return parts

    def record(self, path: Path, line: int) -> None:
        self.lines.setdefault(path, line)

    def resolve(self, parts: list[str]) -> Path:
        """A table header's path, each array of tables replaced by its current entry."""
        path: list[str | int] = []
        for part in parts:
            path.append(part)
            count = self.aot.get(tuple(path))
            if count:
                path.append(count - 1)
        return tuple(path)

    # -- statements and values ---------------------------------------------------------------
    def run(self) -> None:
        table: Path = ()
        while True:
            self.skip_blank(newlines=True)
            if self.i >= len(self.text):
                return
            line = self.line
            if self.peek(2) == "[[":
                self.advance(2)
                parts = self.key()
                parent = self.resolve(parts[:-1])
                base = (*parent, *parts[-1:])
                self.aot[base] = self.aot.get(base, 0) + 1
                table = (*base, self.aot[base] - 1)
                self.record(base, line)
                self.record(table, line)
                self._to_eol()
            elif self.peek() == "[":
                self.advance()
                parts = self.key()
                table = self.resolve(parts)
                self.record(table, line)
                self._to_eol()
            else:
                parts = self.key()
                if not parts:
                    self._to_eol()
                    continue
                self.skip_blank(newlines=False)
                if self.peek() == "=":
                    self.advance()
                self._record_dotted(table, parts, line)
                self.value((*table, *parts))

    def _record_dotted(self, base: Path, parts: list[str], line: int) -> None:
        for n in range(1, len(parts) + 1):
            self.record((*base, *parts[:n]), line)

    def _to_eol(self) -> None:
        end = self.text.find("\n", self.i)
        self.advance((end if end >= 0 else len(self.text)) - self.i)

    def value(self, path: Path) -> None:
        self.skip_blank(newlines=False)
        c = self.peek()
        if c == "{":
            self.advance()
            while self.i < len(self.text):
                self.skip_blank(newlines=True)
                if self.peek() == "}":
                    self.advance()
                    return
                if self.peek() == ",":
                    self.advance()
                    continue
                line = self.line
                parts = self.key()
                if not parts:
                    self.advance()
                    continue
                self.skip_blank(newlines=False)
                if self.peek() == "=":
                    self.advance()
                self._record_dotted(path, parts, line)
                self.value((*path, *parts))
        elif c == "[":
            self.advance()
            index = 0
            while self.i < len(self.text):
                self.skip_blank(newlines=True)
                if self.peek() == "]":
                    self.advance()
                    return
                if self.peek() == ",":
                    self.advance()
                    continue
                self.record((*path, index), self.line)
                self.value((*path, index))
                index += 1
        elif c in ('"', "'"):
            self.skip_string()
        else:
            start = self.i
            while self.i < len(self.text) and self.text[self.i] not in _VALUE_END:
                self.advance()
            if self.i == start and self.i < len(self.text) and self.text[self.i] != "\n":
                self.advance()  # never stall on text we do not understand


class TomlPositions:
    """Line numbers (1-based) of the keys, tables and array elements of a TOML text."""

    __slots__ = ("_lines",)

    def __init__(self, text: str) -> None:
        scanner = _Scanner(text)
        try:
            scanner.run()
        except (IndexError, ValueError, RecursionError):  # pragma: no cover - lenient
            pass
        self._lines = scanner.lines

    def line(self, *path: str | int) -> int | None:
        """The line of ``path``, or of its nearest ancestor that was written, or None."""
        key: Path = tuple(path)
        while key:
            found = self._lines.get(key)
            if found is not None:
                return found
            key = key[:-1]
        return None

    def exact(self, *path: str | int) -> int | None:
        """The line of ``path`` itself; None when it was not written in the text."""
        return self._lines.get(tuple(path))


def describe(path: tuple[str | int, ...]) -> str:
    """('oom', 1, 'args', 'target') -> "oom[1].args.target" (for messages)."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


def read_toml(path: str, what: str) -> str:
    """The text of the file ``path`` (``what`` names it in errors: "scenario", "config").

    Raises ConfigError: missing, unreadable, or not UTF-8 (naming the line of the bad byte).
    """
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise ConfigError(f"{path}: cannot read {what}: no such {what} file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read {what}: {exc.strerror}") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError(f"{path}:{line}: not UTF-8 text ({exc.reason} at byte "
                          f"{exc.start})") from None


def load_toml(text: str, path: str) -> dict[str, Any]:
    """``tomllib.loads`` whose every failure is one ConfigError line naming ``path``."""
    deep_at = _bracket_depth_exceeded(text)
    if deep_at is not None:
        raise _at(path, text, deep_at, f"arrays or tables nested deeper than {MAX_DEPTH} "
                  "levels")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # "Expected '=' ... (at line 3, column 7)" or "(at end of document)"
        msg = _first_line(exc)
        m = re.search(r"\s*\(at (?:line (\d+), column (\d+)|end of document)\)$", msg)
        line = int(m.group(1)) if m and m.group(1) else text.count("\n") + 1
        where = f" (column {m.group(2)})" if m and m.group(2) else ""
        raise ConfigError(f"{path}:{line}: not valid TOML: {msg[: m.start()] if m else msg}"
                          f"{where}") from None
    except RecursionError:  # pragma: no cover - _bracket_depth_exceeded comes first
        raise ConfigError(f"{path}: not accepted: nested deeper than {MAX_DEPTH} levels"
                          ) from None
    except ValueError as exc:  # int("9" * 5000): past sys.get_int_max_str_digits()
        long_number = re.search(r"[0-9_]{1000,}", text)
        raise _at(path, text, long_number.start() if long_number else 0,
                  f"not accepted: {_first_line(exc)}") from None
    deep = _too_deep(data)
    if deep is not None:
        deep_line = TomlPositions(text).line(*deep)
        loc = f"{path}:{deep_line}" if deep_line else path
        raise ConfigError(f"{loc}: key '{describe(deep)}': nested deeper than {MAX_DEPTH} "
                          "levels")
    return data


def _at(path: str, text: str, offset: int, msg: str) -> ConfigError:
    """An error at character ``offset``: "FILE:LINE: key 'KEY': MSG" (the key written at
    the start of that line, when there is one)."""
    line = text.count("\n", 0, offset) + 1
    start = text.rfind("\n", 0, offset) + 1
    head, eq, _ = text[start:offset].partition("=")
    name = head.strip().strip('"\'')
    key = f"key '{name}': " if eq and name else ""
    return ConfigError(f"{path}:{line}: {key}{msg}")


def _bracket_depth_exceeded(text: str) -> int | None:
    """The offset of the first ``[`` or ``{`` nested deeper than MAX_DEPTH, outside strings
    and comments; None when there is none. Iterative, so deep text cannot overflow it;
    brackets in unbalanced or invalid text are left for tomllib to report."""
    depth = 0
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "#":
            end = text.find("\n", i)
            i = n if end < 0 else end
            continue
        if c in "\"'":
            triple = text[i : i + 3] == c * 3
            if triple:
                end = text.find(c * 3, i + 3)
                i = n if end < 0 else end + 3
                continue
            i += 1
            while i < n and text[i] not in (c, "\n"):
                i += 2 if c == '"' and text[i] == "\\" else 1
            i += 1
            continue
        if c in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                return i
        elif c in "]}":
            depth = max(0, depth - 1)
        i += 1
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _too_deep(data: dict[str, Any]) -> Path | None:
    """The path of the first value nested past MAX_DEPTH (iterative: no recursion limit)."""
    stack: list[tuple[Path, object]] = [((), data)]
    while stack:
        path, value = stack.pop()
        if len(path) > MAX_DEPTH:
            return path[:2]
        if isinstance(value, dict):
            stack.extend(((*path, k), v) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend(((*path, n), v) for n, v in enumerate(value))
    return None
