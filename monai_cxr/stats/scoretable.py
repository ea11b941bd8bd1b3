"""Read the truth and score columns of a CSV file, fast and strictly, for ``monai-cxr delong``.

Numbers are parsed by pandas' C reader (a Python loop over rows took seconds per million).
pandas forgives what a statistic must not: a row with too few fields is padded, a first row
with a field too many silently becomes the index (or loses it), duplicate names are renamed
``a.1``, blank lines are skipped. So nothing is returned unless the file was also seen to be
well-formed, in one of two ways. A UTF-8 byte-order mark (BOM) at the very start of the file
(Excel's "CSV UTF-8") is dropped, as pandas and ``prepare`` drop it; one anywhere else in a
name is refused.

- fast (plain ASCII after a possible BOM, no quotes, LF or CRLF): one pass over the bytes in
  cache-sized chunks counts newlines and commas with NumPy; pandas then reads every column, so
  that it refuses a row with too many fields, and each row must have N - 1 commas on average
  (the first one exactly). Anything unexpected hands over to
- careful: the whole file in memory, UTF-8 checked, the position of every field separator
  found (commas and newlines inside quoted fields, RFC 4180 with ``""`` for a quote, do not
  count; a quote anywhere but around a whole field is refused, because pandas and the csv
  module would read it differently), and every failure explained.

Every failure is a :class:`~monai_cxr.errors.CxrError` on one line naming the file, the line
(1-based, the header is line 1) and the column where one applies. pandas is imported when a
table is read, so ``import monai_cxr.stats`` stays light.

Over 400 lines: a fast path and a careful path that explains the first bad row, both strict;
each failure's one-line message is spelt out.
"""

from __future__ import annotations

import csv
import io
import re
import unicodedata

import numpy as np

from monai_cxr.errors import CxrError

__all__ = ["read_score_table"]

_ECHO = 40  # longest echoed value or name, in characters
_LIST = 120  # longest list of available columns in a message
_CHUNK = 1 << 20  # bytes per step of the fast scan: stays in cache
_HEAD = 1 << 16  # a header and first row longer than this go the careful way
_QUOTE, _COMMA, _NL, _CR = 34, 44, 10, 13
_BOM = b"\xef\xbb\xbf"  # UTF-8 byte-order mark: dropped at the start of the file only
_VISIBLE = re.compile(rb"\S")


def read_score_table(path, truth_col: str, score_cols) -> dict[str, np.ndarray]:
    """The truth column and score columns of a CSV file, as float64 arrays keyed by name.

    Parameters
    ----------
    path : str or os.PathLike
        UTF-8 CSV file with a header line; ``,`` separates fields, ``"`` quotes them.
    truth_col : str
        Column of the truth; every value must be 0 or 1 (``1.0`` is 1).
    score_cols : sequence of str
        Columns of scores; every value must be a finite number. Distinct, and not ``truth_col``.

    Returns
    -------
    dict of str to ndarray of shape (n,)
        ``truth_col`` first, then ``score_cols`` in the order given.

    Raises
    ------
    CxrError
        One line naming the file, line and column: no such file, a folder, unreadable, not
        UTF-8; no header; a duplicated name or one with invisible characters; a missing
        column; a row with more or fewer fields than the header; a blank or non-finite score;
        a truth other than 0/1; no data rows.
    """
    columns = _check_request(truth_col, score_cols)
    out = _read_fast(path, str(path), columns)
    return out if out is not None else _read_careful(path, str(path), columns)


def _read_fast(path, where: str, columns: list[str]):
    """The columns of a plain, well-formed file, or None: then :func:`_read_careful` decides.

    Raises CxrError only for the header (the same checks and messages as the careful path).
    """
    try:
        with open(path, "rb", buffering=0) as handle:
            scan = _scan(handle)
    except OSError:
        return None
    if scan is None:
        return None
    head, size, newlines, commas, trailing = scan
    header_end = head.find(b"\n")
    second_end = head.find(b"\n", header_end + 1)
    if second_end == -1 and len(head) == size:  # the whole file is in head: its end ends the row
        second_end = len(head)
    if header_end == -1 or second_end == -1 or not head[:header_end].strip():
        return None
    header = head[:header_end].decode("ascii").removesuffix("\r").split(",")
    index = _check_columns(header, columns, where)
    n_fields, n_rows = len(header), newlines - trailing
    if (
        n_rows < 1
        or commas != (n_fields - 1) * (n_rows + 1)
        or head.count(b",", header_end, second_end) != n_fields - 1
    ):
        return None

    import pandas as pd  # here, not at import: `import monai_cxr.stats` stays light

    used = set(index.values())
    dtypes = {i: np.float64 if i in used else object for i in range(n_fields)}
    try:  # every column: pandas refuses a row with too many fields only then
        frame = pd.read_csv(  # no nrows: it makes pandas read in chunks, 1.4x slower; the shape is checked below
            path,
            header=0,
            dtype=dtypes,
            index_col=False,
            skip_blank_lines=True,  # trailing blank lines; one between rows fails the comma count and the shape
            na_filter=False,
            encoding="utf-8",
            engine="c",
        )
    except ValueError:  # a field too many, a bad number, a blank line: the careful path explains
        return None
    if frame.shape != (n_rows, n_fields):
        return None
    out = {c: frame.iloc[:, index[c]].to_numpy(dtype=np.float64, copy=False) for c in columns}
    return None if _first_bad(out, columns) is not None else out


def _scan(handle):
    """One pass in cache-sized chunks: (head, size, newlines, commas, trailing), or None.

    None for a quote, a byte beyond ASCII (but a BOM opening the file) or a carriage return
    outside CRLF. ``head`` is the file's start, without a BOM, up to its second newline (if
    near); ``size`` counts the bytes without the BOM; ``trailing`` counts the newlines in the run
    of line ends that closes the file (blank lines there are no rows).
    """
    buffer = bytearray(_CHUNK)
    flags = np.empty(_CHUNK, dtype=bool)
    head, total, newlines, commas, trailing = b"", 0, 0, 0, 0
    carriage_returns = crlf = 0
    previous_cr, head_open, first = False, True, True
    while size := handle.readinto(buffer):
        chunk = buffer if size == _CHUNK else buffer[:size]
        bom = 0
        if not chunk.isascii():  # (an ASCII file never pays for the BOM test)
            bom = len(_BOM) if first and chunk.startswith(_BOM) else 0
            if not bom or not chunk[bom:].isascii():
                return None
        if chunk.find(b'"') != -1:
            return None
        crlf += previous_cr and chunk[0] == _NL  # a CRLF split between two chunks
        if chunk.find(b"\r") != -1:
            carriage_returns += chunk.count(b"\r")
            crlf += chunk.count(b"\r\n")
        previous_cr = chunk[-1] == _CR
        if head_open:  # (counting head's newlines at every chunk cost as much as the rest of the scan)
            head += bytes(chunk[bom:] if bom else chunk)
            head_open = head.count(b"\n") < 2 and len(head) < _HEAD
        total += size - bom
        first = False
        values = np.frombuffer(buffer, dtype=np.uint8, count=size)
        seen = flags[:size]
        newlines += np.count_nonzero(np.equal(values, _NL, out=seen))
        commas += np.count_nonzero(np.equal(values, _COMMA, out=seen))
        del values, seen  # no export of the buffer may outlive the step (readinto reuses it)
        stop = size
        while stop and buffer[stop - 1] in (_NL, _CR):
            stop -= 1
        run = buffer[stop:size].count(b"\n")
        trailing = trailing + run if stop == 0 else run
    if carriage_returns != crlf:
        return None
    return head, total, newlines, commas, trailing


def _read_careful(path, where: str, columns: list[str]) -> dict[str, np.ndarray]:
    """Check every byte that matters, then read; name the first problem found."""
    data = _read_bytes(path)
    start = len(_BOM) if data.startswith(_BOM) else 0  # a BOM opening the file is no part of the header
    end = len(data)
    while end > start and data[end - 1] in (_NL, _CR):  # trailing blank lines are no rows
        end -= 1
    if _VISIBLE.search(data, start, end) is None:
        raise CxrError(f"{where}: the file is empty; expected a header line naming the columns")
    _check_utf8(data, where)
    if b"\r" in data and data.count(b"\r") != data.count(b"\r\n"):
        line = data.count(b"\n", 0, _lone_cr(data)) + 1
        raise CxrError(
            f"{where} line {line}: a carriage return ends a line without a line feed; allowed line endings: LF or CRLF"
        )
    body = np.frombuffer(data, dtype=np.uint8, count=end)
    ends, commas = _separators(body, data, where, start)
    header = _header(data, start, int(ends[0]), where)
    index = _check_columns(header, columns, where)
    if len(ends) == 1:
        raise CxrError(f"{where}: no data rows below the header (line 1)")
    _check_field_counts(ends, commas, len(header), data, where)

    import pandas as pd

    used = sorted(set(index.values()))
    try:  # na_filter=False: "NA", "nan" or a blank is a ValueError, found below, not a silent NaN
        frame = pd.read_csv(
            path,
            header=0,
            usecols=used,
            dtype=np.float64,
            index_col=False,
            encoding="utf-8",
            engine="c",
            na_filter=False,
        )
    except ValueError:  # text in a number column: find it
        _raise_first_bad_text(pd, path, where, columns, index, ends, data)
        raise  # not reached
    if len(frame) != len(ends) - 1:  # a safety net: pandas and these checks must agree on rows
        raise CxrError(
            f"{where}: read {len(frame)} rows but counted {len(ends) - 1} lines of data; check quotes and line endings"
        )
    position = {i: p for p, i in enumerate(used)}  # frame columns are in file order
    out = {c: frame.iloc[:, position[index[c]]].to_numpy(dtype=np.float64, copy=False) for c in columns}
    bad = _first_bad(out, columns)
    if bad is not None:
        row, c = bad
        text = _cell(data, ends, row + 1, index[c])
        raise CxrError(_value_message(where, _line(data, ends, row + 1), c, text, c == columns[0]))
    return out


def _first_bad(out: dict, columns: list[str]):
    """(row, column) of the first truth other than 0/1 or score that is not finite, or None."""
    first = None
    for c in columns:
        values = out[c]
        bad = (values != 0.0) & (values != 1.0) if c == columns[0] else ~np.isfinite(values)
        if bad.any():
            row = int(np.argmax(bad))
            if first is None or row < first[0]:
                first = (row, c)
    return first


# ------------------------------------------------------------------------ the request
def _check_request(truth_col, score_cols) -> list[str]:
    if not isinstance(truth_col, str):
        raise CxrError(f"the truth column must be a name (a string), got {truth_col!r}")
    if isinstance(score_cols, str):
        score_cols = [score_cols]
    score_cols = list(score_cols)
    if not score_cols:
        raise CxrError("no score column given; name at least one")
    for c in score_cols:
        if not isinstance(c, str):
            raise CxrError(f"a score column must be a name (a string), got {c!r}")
    seen = set()
    for c in score_cols:
        if c in seen:
            raise CxrError(
                f"score column {_clip(c)} repeats; each score column may be given once (given: {_names(score_cols)})"
            )
        seen.add(c)
    if truth_col in seen:
        raise CxrError(f"column {_clip(truth_col)} is given as both the truth column and a score column")
    return [truth_col, *score_cols]


# ------------------------------------------------------------------------ the bytes
def _read_bytes(path) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        raise CxrError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise CxrError(f"{path}: is a folder; expected a CSV file") from None
    except PermissionError:
        raise CxrError(f"{path}: cannot read it (permission denied)") from None
    except OSError as exc:
        raise CxrError(f"{path}: cannot read it ({exc.strerror or exc})") from None


def _check_utf8(data: bytes, where: str) -> None:
    if data.isascii():
        return
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line_start = data.rfind(b"\n", 0, exc.start) + 1
        line = data.count(b"\n", 0, exc.start) + 1
        column = len(data[line_start : exc.start].decode("utf-8", errors="replace")) + 1
        raise CxrError(
            f"{where} line {line}: not UTF-8 text (byte 0x{data[exc.start]:02x} at character "
            f"{column}); save the file as UTF-8"
        ) from None


def _lone_cr(data: bytes) -> int:
    at = data.find(b"\r")
    while at != -1 and data[at + 1 : at + 2] == b"\n":
        at = data.find(b"\r", at + 1)
    return at


def _separators(body: np.ndarray, data: bytes, where: str, start: int = 0):
    """Where each record stops (a newline, or the end) and where its fields are split (commas).

    Commas and newlines inside quotes are left out. ``start``: where the header begins (after a BOM).
    """
    newlines = np.flatnonzero(body == _NL)
    commas = np.flatnonzero(body == _COMMA)
    if data.find(b'"', 0, len(body)) != -1:
        quotes = _check_quotes(body, data, where, start)
        newlines = newlines[np.searchsorted(quotes, newlines) % 2 == 0]
        commas = commas[np.searchsorted(quotes, commas) % 2 == 0]
    return np.append(newlines, len(body)), commas


def _check_quotes(body: np.ndarray, data: bytes, where: str, start: int = 0) -> np.ndarray:
    """Positions of the quotes, each pair around (part of) a whole field; else a CxrError."""
    quotes = np.flatnonzero(body == _QUOTE)
    # a quoted stretch opens at a field's start (or right after the quote closing the stretch
    # before it: "" inside a field) and closes at a field's end (or right before such a quote)
    opens, closes = quotes[0::2], quotes[1::2]
    before = body[np.maximum(opens - 1, 0)]
    after = body[np.minimum(closes + 1, len(body) - 1)]
    previous_close = np.append(-2, closes)[: len(opens)]
    next_open = np.append(opens[1:], -1)[: len(closes)]
    ok_open = (opens == start) | np.isin(before, (_COMMA, _NL)) | ((before == _QUOTE) & (opens - 1 == previous_close))
    ok_close = (
        (closes == len(body) - 1) | np.isin(after, (_COMMA, _NL, _CR)) | ((after == _QUOTE) & (closes + 1 == next_open))
    )
    if not (ok_open.all() and ok_close.all()):
        at = int(min(opens[~ok_open].min(initial=len(body)), closes[~ok_close].min(initial=len(body))))
        line = data.count(b"\n", 0, at) + 1
        column = at - (data.rfind(b"\n", 0, at) + 1) + 1
        raise CxrError(
            f"{where} line {line}: a quote at character {column} is inside a field; "
            'quote whole fields only, and write a quote inside one as ""'
        )
    if len(quotes) % 2:
        line = data.count(b"\n", 0, int(quotes[-1])) + 1
        raise CxrError(f"{where} line {line}: a quote is never closed")
    return quotes


def _header(data: bytes, start: int, stop: int, where: str) -> list[str]:
    text = _record_text(data, start, stop)
    if not text.strip():
        raise CxrError(f"{where} line 1: the header line is blank; it must name the columns")
    try:
        return next(csv.reader(io.StringIO(text, newline=""), strict=True))
    except (csv.Error, StopIteration) as exc:
        raise CxrError(f"{where} line 1: cannot read the header ({exc})") from None


def _check_columns(header: list[str], columns: list[str], where: str) -> dict[str, int]:
    for i, name in enumerate(header):
        reason = _invisible(name)
        if reason:
            raise CxrError(f"{where} line 1, column {i + 1}: the name {_clip(name)} has {reason}; rename the column")
    first = {}
    for i, name in enumerate(header):
        if name in first:
            raise CxrError(
                f"{where} line 1: the name {_clip(name)} is used by columns {first[name] + 1} "
                f"and {i + 1}; names must be unique"
            )
        first[name] = i
    for c in columns:
        if c not in first:
            hint = (
                "; line 1 looks like data, but it must name the columns"
                if all(_is_number(name) for name in header)
                else ""
            )
            raise CxrError(f"{where}: no column {_clip(c)} (columns: {_names(header)}){hint}")
    return {c: first[c] for c in columns}


def _invisible(name: str) -> str:
    """Why ``name`` holds characters a reader cannot see, or ''."""
    if name != name.strip():
        return "leading or trailing whitespace"
    for char in name:
        category = unicodedata.category(char)
        if char == "\ufeff":
            return "a byte-order mark (BOM)"
        if category in ("Cc", "Cf", "Co", "Cn", "Zl", "Zp") or (category == "Zs" and char != " "):
            return f"an invisible character (U+{ord(char):04X})"
    return ""


def _check_field_counts(ends, commas, n_fields, data, where) -> None:
    """Every record has ``n_fields`` fields: its last comma before its end, the next one after it."""
    n_records = len(ends)
    if len(commas) == n_records * (n_fields - 1):
        if n_fields == 1:
            return
        per_record = commas.reshape(n_records, n_fields - 1)
        if (per_record[:, -1] < ends).all() and (per_record[1:, 0] > ends[:-1]).all():
            return
    counts = np.diff(np.searchsorted(commas, ends), prepend=0) + 1  # fields per record
    record = int(np.argmax(counts != n_fields))
    count = int(counts[record])
    start = int(ends[record - 1]) + 1 if record else 0
    blank = " (a blank line)" if not data[start : int(ends[record])].strip() else ""
    raise CxrError(
        f"{where} line {_line(data, ends, record)}: {count} field{'s' * (count != 1)}{blank}, "
        f"but the header has {n_fields}; every row needs exactly {n_fields}"
    )


# ------------------------------------------------------------------------ the values
def _raise_first_bad_text(pd, path, where, columns, index, ends, data) -> None:
    """pandas refused a value as a float: read the columns as text and name the first bad cell."""
    text = pd.read_csv(
        path,
        header=0,
        usecols=[index[c] for c in columns],
        dtype=str,
        keep_default_na=False,
        index_col=False,
        encoding="utf-8",
        engine="c",
    )
    position = {i: p for p, i in enumerate(sorted(index.values()))}
    first = None
    for c in columns:
        cells = text.iloc[:, position[index[c]]]
        values = pd.to_numeric(cells, errors="coerce").to_numpy(dtype=np.float64)
        bad = (values != 0.0) & (values != 1.0) if c == columns[0] else ~np.isfinite(values)
        if bad.any():
            row = int(np.argmax(bad))
            if first is None or row < first[0]:
                first = (row, c, cells.iloc[row])
    if first is None:
        raise CxrError(f"{where}: a value in columns {_names(columns)} is not a number")
    row, c, cell = first
    raise CxrError(_value_message(where, _line(data, ends, row + 1), c, cell, c == columns[0]))


def _value_message(where, line, column, text, is_truth) -> str:
    if is_truth:
        shown = "is blank" if not text.strip() else f"holds {_clip(text)}"
        return f"{where} line {line}: truth column {_clip(column)} {shown}; allowed: 0 or 1"
    if not text.strip():
        return f"{where} line {line}: column {_clip(column)} is blank; a finite number is required"
    return f"{where} line {line}: column {_clip(column)} holds {_clip(text)}, not a finite number"


def _cell(data: bytes, ends, record: int, field: int) -> str:
    start = int(ends[record - 1]) + 1 if record else 0
    return next(csv.reader(io.StringIO(_record_text(data, start, int(ends[record])), newline="")))[field]


def _record_text(data: bytes, start: int, stop: int) -> str:
    text = data[start:stop].decode("utf-8")
    return text.removesuffix("\r")


def _line(data: bytes, ends, record: int) -> int:
    """1-based line where ``record`` (0 = header) starts; quoted newlines count as lines."""
    start = int(ends[record - 1]) + 1 if record else 0
    return data.count(b"\n", 0, start) + 1


# ------------------------------------------------------------------------ messages
def _clip(text: str) -> str:
    """``repr`` of ``text``, cut to about ``_ECHO`` characters."""
    return repr(text if len(text) <= _ECHO else text[: _ECHO - 3] + "...")


def _names(names) -> str:
    """Names joined by ', ', cut to about ``_LIST`` characters with a count of the rest."""
    shown, size = [], 0
    for name in names:
        name = name if len(name) <= _ECHO else name[: _ECHO - 3] + "..."
        if shown and size + len(name) > _LIST:
            break
        shown.append(name)
        size += len(name) + 2
    rest = len(names) - len(shown)
    return ", ".join(shown) + (f", ... and {rest} more" if rest else "") if names else "none"


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
