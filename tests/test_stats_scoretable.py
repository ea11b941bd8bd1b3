"""read_score_table: a correct read, and one precise line for every way a score table can be wrong."""

from __future__ import annotations

import importlib
import subprocess
import sys

import numpy as np
import pytest

from monai_cxr.errors import CxrError
from monai_cxr.stats.scoretable import read_score_table

scoretable = importlib.import_module("monai_cxr.stats.scoretable")

GOOD = "image_id,label,s1,s2\nimg0,0,0.25,1\nimg1,1,0.75,2.5e-1\nimg2,1.0,-3,4\n"


def write(tmp_path, text, name="scores.csv"):
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8") if isinstance(text, str) else text)
    return path


def error(path, truth="label", scores=("s1", "s2")):
    with pytest.raises(CxrError) as info:
        read_score_table(path, truth, list(scores))
    message = str(info.value)
    assert "\n" not in message
    return message


def test_reads_requested_columns_as_float64(tmp_path):
    out = read_score_table(write(tmp_path, GOOD), "label", ["s2", "s1"])
    assert list(out) == ["label", "s2", "s1"]
    np.testing.assert_array_equal(out["label"], [0, 1, 1])
    np.testing.assert_array_equal(out["s1"], [0.25, 0.75, -3])
    np.testing.assert_array_equal(out["s2"], [1, 0.25, 4])
    assert all(v.dtype == np.float64 for v in out.values())


def test_crlf_quotes_and_trailing_blank_lines(tmp_path):
    text = 'path,"label",s1\r\n"a,b.png",1,"0.5"\r\n"say ""hi""\nthere",0,0.25\r\n' + "c.png,1,1e-3\r\n\r\n\r\n"
    out = read_score_table(write(tmp_path, text), "label", ["s1"])
    np.testing.assert_array_equal(out["label"], [1, 0, 1])
    np.testing.assert_array_equal(out["s1"], [0.5, 0.25, 1e-3])


def test_parses_numbers_exactly_like_python(tmp_path):
    rng = np.random.default_rng(0)
    values = rng.normal(size=500) * 10.0 ** rng.integers(-30, 30, 500)
    text = "y,s\n" + "".join(f"{i % 2},{v!r}\n" for i, v in enumerate(values.tolist()))
    out = read_score_table(write(tmp_path, text), "y", ["s"])
    np.testing.assert_array_equal(out["s"], values)


# ------------------------------------------------------------------------ the file
def test_missing_file(tmp_path):
    assert error(tmp_path / "absent.csv") == f"{tmp_path / 'absent.csv'}: no such file"


def test_folder(tmp_path):
    assert error(tmp_path) == f"{tmp_path}: is a folder; expected a CSV file"


def test_unreadable(tmp_path, monkeypatch):
    def deny(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(scoretable, "open", deny, raising=False)  # as root, chmod cannot deny
    assert error(tmp_path / "x.csv") == f"{tmp_path / 'x.csv'}: cannot read it (permission denied)"


def test_not_utf8_names_line_and_character(tmp_path):
    path = write(tmp_path, GOOD.encode() + "img3,1,0.5,caf\xe9\n".encode("latin-1"))
    assert error(path) == f"{path} line 5: not UTF-8 text (byte 0xe9 at character 15); save the file as UTF-8"


@pytest.mark.parametrize("text", ["", "\n\n", "  \r\n"])
def test_empty_file_has_no_header(tmp_path, text):
    assert "the file is empty; expected a header line" in error(write(tmp_path, text))


def test_blank_header_line(tmp_path):
    path = write(tmp_path, "\nlabel,s1,s2\n0,1,2\n")
    assert error(path) == f"{path} line 1: the header line is blank; it must name the columns"


def test_no_data_rows(tmp_path):
    path = write(tmp_path, "label,s1,s2\n")
    assert error(path) == f"{path}: no data rows below the header (line 1)"


# ------------------------------------------------------------------------ the header
def test_duplicated_name(tmp_path):
    path = write(tmp_path, "label,s1,s2,s1\n0,1,2,3\n")
    assert error(path) == f"{path} line 1: the name 's1' is used by columns 2 and 4; names must be unique"


@pytest.mark.parametrize(
    "name, reason",
    [
        ("s2 ", "leading or trailing whitespace"),
        (" s2", "leading or trailing whitespace"),
        ("s\u200b2", "an invisible character (U+200B)"),
        ("s\x072", "an invisible character (U+0007)"),
        ("s\xa02", "an invisible character (U+00A0)"),
    ],
)
def test_invisible_characters_in_a_name(tmp_path, name, reason):
    path = write(tmp_path, f"label,s1,{name}\n0,1,2\n1,2,3\n")
    assert error(path) == f"{path} line 1, column 3: the name {name!r} has {reason}; rename the column"


@pytest.mark.parametrize(
    "text",
    [
        "\ufefflabel,s1,s2\n0,1,2\n1,2,3\n",  # Excel's "CSV UTF-8": plain ASCII after the BOM
        "\ufefflabel,s1,s2\r\n0,1,2\r\n1,2,3\r\n",
        '\ufeff"label",s1,s2\n0,1,2\n1,2,3\n',  # a quoted first name right after the BOM
        "\ufefflabel,s1,s2,note\n0,1,2,caf\u00e9\n1,2,3,x\n",  # UTF-8 beyond the BOM: the careful path
    ],
)
def test_a_bom_opening_the_file_is_dropped(tmp_path, text):
    path = write(tmp_path, text)
    out = read_score_table(path, "label", ["s1", "s2"])
    np.testing.assert_array_equal(out["label"], [0, 1])
    np.testing.assert_array_equal(out["s2"], [2, 3])
    assert scoretable._read_careful(path, str(path), ["label", "s1", "s2"]).keys() == out.keys()


def test_a_plain_file_with_a_bom_takes_the_fast_path(tmp_path, monkeypatch):
    path = write(tmp_path, "\ufeffid,label,s1\n" + "".join(f"c{i},{i % 2},{i / 7!r}\n" for i in range(50)))
    monkeypatch.setattr(scoretable, "_CHUNK", 16)
    careful_forbidden(monkeypatch)
    out = read_score_table(path, "label", ["s1"])
    np.testing.assert_array_equal(out["s1"], [i / 7 for i in range(50)])


@pytest.mark.parametrize(
    "text, column, name",
    [
        ("label,\ufeffs1,s2\n0,1,2\n1,2,3\n", 2, "\\ufeffs1"),  # inside the header: a pasted name
        ("\ufeff\ufefflabel,s1,s2\n0,1,2\n1,2,3\n", 1, "\\ufefflabel"),  # a second BOM is part of the name
    ],
)
def test_a_bom_elsewhere_in_a_name_is_refused(tmp_path, text, column, name):
    path = write(tmp_path, text)
    assert error(path) == (
        f"{path} line 1, column {column}: the name '{name}' has a byte-order mark (BOM); rename the column"
    )


def test_a_bom_alone_is_an_empty_file(tmp_path):
    path = write(tmp_path, "\ufeff\n")
    assert error(path) == f"{path}: the file is empty; expected a header line naming the columns"


def test_missing_column_lists_available_ones_cut_short(tmp_path):
    names = [f"column_number_{i}" for i in range(40)]
    path = write(tmp_path, ",".join(["label", "s1", *names]) + "\n" + ",".join(["0"] * 42) + "\n")
    message = error(path, scores=["s1", "nope"])
    assert message.startswith(f"{path}: no column 'nope' (columns: label, s1, column_number_0, ")
    assert message.endswith(", ... and 34 more)") and len(message) < 250 + len(str(path))


def test_headerless_file_gets_a_hint(tmp_path):
    path = write(tmp_path, "0,0.5,0.25\n1,0.75,0.5\n")
    assert error(path).endswith("line 1 looks like data, but it must name the columns")


# ------------------------------------------------------------------------ the request
@pytest.mark.parametrize(
    "truth, scores, message",
    [
        ("label", ["s1", "s2", "s1"], "score column 's1' repeats; each score column may be given once"),
        ("label", ["s1", "label"], "column 'label' is given as both the truth column and a score column"),
        ("label", [], "no score column given"),
        (None, ["s1"], "the truth column must be a name"),
    ],
)
def test_bad_request_is_refused_before_reading(tmp_path, truth, scores, message):
    assert message in error(tmp_path / "never-read.csv", truth, scores)


# ------------------------------------------------------------------------ ragged rows
@pytest.mark.parametrize(
    "row, count, blank",
    [
        ("img3,1,0.5,0.5,9", 5, ""),  # one field too many: pandas would make it an index
        ("img3,1,0.5", 3, ""),  # one too few: pandas would pad it with NaN
        ("", 1, " (a blank line)"),
        ("img3,1,0.5,0.5,", 5, ""),
    ],
)
def test_ragged_rows(tmp_path, row, count, blank):
    path = write(tmp_path, GOOD + row + "\nimg4,0,1,1\n")
    assert error(path) == (
        f"{path} line 5: {count} field{'s' * (count != 1)}{blank}, but the header has 4; every row needs exactly 4"
    )


def test_extra_field_on_the_first_row(tmp_path):
    path = write(tmp_path, "label,s1,s2\n0,0.1,0.2,0.3\n1,0.5,0.5\n")
    assert error(path).startswith(f"{path} line 2: 4 fields, but the header has 3")


def test_line_numbers_count_newlines_inside_quotes(tmp_path):
    path = write(tmp_path, 'note,label,s1,s2\n"two\nlines",0,1,2\nx,1,2\n')
    assert error(path).startswith(f"{path} line 4: 3 fields")


@pytest.mark.parametrize(
    "text, message",
    [
        ('label,s1,s2\n0,"1,2\n', "line 2: a quote is never closed"),
        ('label,s1,s2\n0,1"5,2\n1,2,3\n', "line 2: a quote at character 4 is inside a field"),
        ('label,s1,s2\n0,"1"5,2\n1,2,3\n', "line 2: a quote at character 5 is inside a field"),
    ],
)
def test_malformed_quotes(tmp_path, text, message):
    path = write(tmp_path, text)
    assert error(path).startswith(f"{path} {message}")


def test_lone_carriage_return(tmp_path):
    path = write(tmp_path, "label,s1,s2\n0,1,2\r1,2,3\n")
    assert error(path).startswith(f"{path} line 2: a carriage return ends a line without a line feed")


# ------------------------------------------------------------------------ values
@pytest.mark.parametrize(
    "cell, shown",
    [
        ("", "is blank; a finite number is required"),
        ("abc", "holds 'abc', not a finite number"),
        ("nan", "holds 'nan', not a finite number"),
        ("NA", "holds 'NA', not a finite number"),
        ("-inf", "holds '-inf', not a finite number"),
        ("1e999", "holds '1e999', not a finite number"),
        ("1_0", "holds '1_0', not a finite number"),
        ("x" * 100, f"holds {'x' * 37 + '...'!r}, not a finite number"),
    ],
)
def test_bad_score(tmp_path, cell, shown):
    path = write(tmp_path, GOOD + f"img3,1,0.5,{cell}\nimg4,0,1,1\n")
    assert error(path) == f"{path} line 5: column 's2' {shown}"


def test_first_bad_score_wins_across_columns(tmp_path):
    path = write(tmp_path, GOOD + "img3,1,0.5,oops\nimg4,0,bad,1\n")
    assert error(path, scores=["s1", "s2"]) == f"{path} line 5: column 's2' holds 'oops', not a finite number"


@pytest.mark.parametrize(
    "cell, shown",
    [("2", "holds '2'"), ("-1", "holds '-1'"), ("", "is blank"), ("yes", "holds 'yes'"), ("0.5", "holds '0.5'")],
)
def test_bad_truth(tmp_path, cell, shown):
    path = write(tmp_path, GOOD + f"img3,{cell},0.5,0.5\n")
    assert error(path) == f"{path} line 5: truth column 'label' {shown}; allowed: 0 or 1"


def test_importing_stats_imports_neither_pandas_nor_torch():
    code = (
        "import sys, monai_cxr.stats, monai_cxr.stats.scoretable; "
        "print(sorted(m for m in ('pandas', 'torch') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


# ------------------------------------------------------------------------ the fast path
def careful_forbidden(monkeypatch):
    def fail(*args):
        raise AssertionError("the careful path was taken")

    monkeypatch.setattr(scoretable, "_read_careful", fail)


@pytest.mark.parametrize("chunk", [7, 16, 1 << 20])
@pytest.mark.parametrize("ending", ["\n", "\r\n"])
def test_plain_files_take_the_fast_path_at_any_chunk_size(tmp_path, monkeypatch, chunk, ending):
    """Chunk boundaries fall inside rows, inside CRLF pairs and inside the trailing blank lines."""
    rng = np.random.default_rng(1)
    y, s = rng.integers(0, 2, 200).tolist(), rng.normal(size=200).tolist()
    text = ending.join(["id,label,s1,note"] + [f"case{i},{y[i]},{s[i]!r},n{i % 3}" for i in range(200)])
    path = write(tmp_path, text + ending * 3)
    monkeypatch.setattr(scoretable, "_CHUNK", chunk)
    careful_forbidden(monkeypatch)
    out = read_score_table(path, "label", ["s1"])
    np.testing.assert_array_equal(out["label"], y)
    np.testing.assert_array_equal(out["s1"], s)


@pytest.mark.parametrize(
    "text",
    [
        'id,label,s1\n"a",1,0.5\nb,0,0.25\n',  # quotes
        "id,label,s1\ncaf\u00e9,1,0.5\nb,0,0.25\n",  # UTF-8 beyond ASCII
        "label,s1\n1,0.5\n0,0.25",  # one data row without a newline after the header's: still fast
    ],
)
def test_other_files_read_the_same_either_way(tmp_path, text):
    path = write(tmp_path, text)
    out = read_score_table(path, "label", ["s1"])
    np.testing.assert_array_equal(out["s1"], [0.5, 0.25])
    assert scoretable._read_careful(path, str(path), ["label", "s1"]).keys() == out.keys()


@pytest.mark.parametrize(
    "rows, line, count",
    [
        # a field too many and one too few balance the comma count: pandas must refuse the long row
        (["a,1,0.5,x", "b,0,0.5,x,extra", "c,1,0.5"], 3, 5),
        # the first row's extra field would become pandas' index or be dropped
        (["a,1,0.5,x,extra", "b,0,0.5"], 2, 5),
        # a missing text field reads as '' in pandas: only the comma count tells
        (["a,1,0.5,x", "b,0,0.5", "c,1,0.5,x"], 3, 3),
        (["a,1,0.5", "b,0,0.5,x,"], 2, 3),
        # a blank line balances an extra comma
        (["a,1,0.5,x", "", "b,0,0.5,x,,"], 3, 1),
    ],
)
def test_balanced_ragged_rows_are_still_found(tmp_path, rows, line, count):
    path = write(tmp_path, "\n".join(["id,label,s1,note", *rows]) + "\n")
    message = error(path, scores=["s1"])
    assert message.startswith(f"{path} line {line}: {count} field")
