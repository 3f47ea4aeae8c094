r"""File and folder names as text that never breaks a record, a TSV or a log.

On Linux a name is bytes. Python hands undecodable bytes over as lone
surrogates ("surrogateescape"), which cannot be encoded to UTF-8: written
as they are, they kill the build. `escape` turns a name into printable text,
losslessly:

- valid UTF-8 characters stay as they are (`café.jpg` is `café.jpg`);
- a byte that is not part of valid UTF-8 becomes `\xHH` (0xff -> `\xff`);
- control characters (tab, newline, ...) become `\xHH` too (tab -> `\x09`),
  so a name never splits a TSV line or a labels.txt field;
- a backslash becomes `\\`, so `\xff` in a real name is `\\xff` and no two
  names escape alike.

`unescape` gives the original bytes back. Class keys, the records'
`image/filename`, the manifest, `manifest_files.tsv` and every message use
the escaped form; files are opened by their real names.

Escaping keeps names apart; `lookalike_key` says when two of them would
still read as one (class folders "cls" and "cls ", or "café" composed and
decomposed): the build refuses such class folders rather than make two
classes a reader cannot tell apart.
"""

from __future__ import annotations

import os
import re
import unicodedata

_CONTROL = {c for c in range(0x20)} | {0x7F}
_ESCAPE = re.compile(r"\\(\\|x[0-9a-f]{2})")


def escape(name: str | bytes) -> str:
    """The printable, lossless text of a file name (str from os.* or raw bytes)."""
    if isinstance(name, str) and name.isprintable() and "\\" not in name:
        return name  # the common case (no surrogates, controls or backslashes): as it is
    raw = os.fsencode(name)
    out = []
    for ch in raw.decode("utf-8", errors="surrogateescape"):
        code = ord(ch)
        if ch == "\\":
            out.append("\\\\")
        elif 0xDC80 <= code <= 0xDCFF:  # an undecodable byte
            out.append(f"\\x{code - 0xDC00:02x}")
        elif code in _CONTROL:
            out.append(f"\\x{code:02x}")
        else:
            out.append(ch)
    return "".join(out)


def unescape(text: str) -> bytes:
    """The raw bytes of the name `escape` made `text` from."""
    parts, pos = [], 0
    for match in _ESCAPE.finditer(text):
        parts.append(text[pos:match.start()].encode("utf-8"))
        token = match.group(1)
        parts.append(b"\\" if token == "\\" else bytes([int(token[1:], 16)]))
        pos = match.end()
    parts.append(text[pos:].encode("utf-8"))
    return b"".join(parts)


def printable(text: str) -> str:
    """Prose (an error message that may quote a raw name) made safe for UTF-8
    files and one-line fields: undecodable bytes and control characters as
    `\\xHH`; backslashes kept (not lossless: for reasons, not for names)."""
    out = []
    for ch in text:
        code = ord(ch)
        if 0xDC80 <= code <= 0xDCFF:
            out.append(f"\\x{code - 0xDC00:02x}")
        elif code in _CONTROL or 0xD800 <= code <= 0xDFFF:
            out.append(f"\\x{code & 0xFF:02x}")
        else:
            out.append(ch)
    return "".join(out)


def lookalike_key(text: str) -> str:
    """How an escaped name reads: Unicode NFC (composed and decomposed
    accents alike), invisible format characters dropped (zero-width space,
    byte-order mark, direction marks), whitespace runs as one space and none
    at either end (as labels.txt writes class names). Case is kept: "Dog" and
    "dog" look different."""
    visible = "".join(ch for ch in unicodedata.normalize("NFC", text)
                      if unicodedata.category(ch) != "Cf")
    return " ".join(visible.split())
