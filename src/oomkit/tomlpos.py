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
"""

from __future__ import annotations

from typing import Final

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
        except (IndexError, ValueError):  # pragma: no cover - lenient by design
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
