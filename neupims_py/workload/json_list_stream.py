"""Read the items of a large JSON list file one at a time, keeping every complete item of a cut-off file.

The packaged ShareGPT file (125 MB) stops in the middle of a conversation: a plain
``json.load`` would reject it whole. Here each item is decoded as soon as it is complete,
and a file that ends inside an item ends the iteration with ``ended_early`` set.
"""

from __future__ import annotations

import codecs
import json
import os

from neupims_py.errors import UserError

# A decode error this close to the end of the text read so far may just mean "read more".
_NEAR_END = 16


class _Text:
    """The file's text read so far from ``pos`` on, with the line number at ``pos``."""

    def __init__(self, f, chunk_bytes: int, path: str):
        self._file = f
        self._chunk_bytes = chunk_bytes
        self._path = path
        self._utf8 = codecs.getincrementaldecoder("utf-8")()
        self.text = ""
        self.pos = 0
        self.line = 1
        self.eof = False

    def more(self, at_least: int = 0) -> bool:
        """Read on (at least ``at_least`` bytes); False at the end of the file."""
        if self.eof:
            return False
        raw = self._file.read(max(self._chunk_bytes, at_least))
        if not raw:
            self.eof = True
            try:
                self.text += self._utf8.decode(b"", final=True)
            except UnicodeDecodeError:
                pass  # cut inside a character: the last item is incomplete anyway
            return False
        try:
            self.text += self._utf8.decode(raw)
        except UnicodeDecodeError as exc:
            raise UserError(
                f"not UTF-8 text ({exc.reason}); the file is damaged", path=self._path
            ) from None
        return True

    def drop_consumed(self) -> None:
        """Forget the text before ``pos`` once it is most of what is held (positions change)."""
        if self.pos > len(self.text) // 2:
            self.text = self.text[self.pos :]
            self.pos = 0

    def next_char(self) -> str:
        """The next non-blank character ('' at the end of the file), not consumed."""
        while True:
            text = self.text
            while self.pos < len(text) and text[self.pos] in " \t\r\n":
                self.line += text[self.pos] == "\n"
                self.pos += 1
            if self.pos < len(text):
                return text[self.pos]
            if not self.more():
                return ""

    def advance(self, end: int) -> None:
        self.line += self.text.count("\n", self.pos, end)
        self.pos = end


class JsonListStream:
    """Iterating yields ``(index, line, item)`` for each item of the list, ``line`` where it starts.

    Afterwards ``count`` is the number of complete items, ``ended_early`` says whether the
    file stopped before the list's closing ``]`` (the incomplete last item is skipped), and
    ``end_line`` is the line where that incomplete item began.
    """

    def __init__(self, path: str | os.PathLike, chunk_bytes: int = 1 << 20):
        self.path = str(path)
        self.chunk_bytes = chunk_bytes
        self.count = 0
        self.ended_early = False
        self.end_line = 0

    def __iter__(self):
        try:
            f = open(self.path, "rb")
        except OSError as exc:
            raise UserError(
                f"cannot open it ({exc.strerror}); check the path", path=self.path
            ) from None
        with f:
            yield from self._items(_Text(f, self.chunk_bytes, self.path))

    def _items(self, src: _Text):
        if src.next_char() != "[":
            raise UserError("not a JSON list (it must start with '[')", path=self.path)
        src.advance(src.pos + 1)
        decoder = json.JSONDecoder()
        index = 0
        while True:
            char = src.next_char()
            if char == "]":
                return
            if index > 0 and char:
                if char != ",":
                    raise UserError(
                        f"line {src.line}: expected ',' or ']' after item {index - 1}, found {char!r}",
                        path=self.path,
                    )
                src.advance(src.pos + 1)
                char = src.next_char()
            if not char:
                self.ended_early, self.end_line = True, src.line
                return
            src.drop_consumed()
            item = self._decode(src, decoder, index)
            if item is None:
                self.ended_early, self.end_line = True, src.line
                return
            start_line = src.line
            src.advance(item[1])
            self.count = index + 1
            yield index, start_line, item[0]
            index += 1

    def _decode(self, src: _Text, decoder: json.JSONDecoder, index: int):
        """(item, end) of the item at src.pos, reading on as needed; None if the file ends inside it."""
        while True:
            try:
                item, end = decoder.raw_decode(src.text, src.pos)
            except json.JSONDecodeError as exc:
                if exc.pos < len(src.text) - _NEAR_END and not exc.msg.startswith(
                    "Unterminated string"
                ):
                    line = src.line + src.text.count("\n", src.pos, exc.pos)
                    raise UserError(
                        f"line {line}: item {index}: not valid JSON ({exc.msg})", path=self.path
                    ) from None
                if not src.more(len(src.text)):  # doubling: a huge item is not re-parsed often
                    return None
                continue
            if end < len(src.text) or not src.more():
                return item, end
            # The item ended exactly where the text read so far ends (a number could go on).
