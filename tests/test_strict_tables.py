"""Strict input: every table is read so that a malformed row or name is one line, never a quiet shift.

Also: lists given to ``generate`` are resolved once (aliases, case, repeats), and echoed user
values are cut to a readable length.
"""

import json

import pytest
from conftest import make_hand_study
from nih_layout import write_release

from monai_cxr.cli import main
from monai_cxr.data.sources.base import parse_labels, read_csv_table
from monai_cxr.data.sources.nih import read_nih
from monai_cxr.errors import CxrError, shown
from monai_cxr.grid.generate import GridSettings, generate

HEADER = "path,patient_id,Mass,Nodule"


@pytest.mark.parametrize(
    "text,message",
    [
        # one field too many in the first row: pandas would make the first column an index
        (HEADER + "\na.png,p1,1,0,1\nb.png,p2,0,1\n", "line 2 has 5 fields but the header 4"),
        (HEADER + "\na.png,p1,1,0\nb.png,p2,0,1,0\n", "line 3 has 5 fields but the header 4"),
        # a cut row: pandas would pad it with blanks
        (HEADER + "\na.png,p1,1,0\nb.png,p2,0\n", "line 3 has 3 fields but the header 4"),
        ("path,patient_id,Mass\u200b,Nodule\na.png,p1,1,0\n", r"column 3: the name 'Mass\\u200b' has invisible"),
        (
            "path,patient_id,Mass ,Nodule\na.png,p1,1,0\n",
            "column 3: the name 'Mass ' has invisible characters or spaces",
        ),
        ("path,patient_id,Mass,Mass\na.png,p1,1,0\n", r"column name 'Mass' appears twice \(columns 3, 4\)"),
        (HEADER + ",\na.png,p1,1,0,\nb.png,p2,0,1,yes\n", "line 3: column 5 has no name in the header but holds 'yes'"),
        (HEADER + "\na.png,,1,0\n", "line 2: column 'patient_id' is blank"),
        (HEADER + "\na.png,p1,1,0\n\n\nb.png,,1,0\n", "line 5: column 'patient_id' is blank"),  # blank lines count
        ('path,patient_id,Mass,Nodule\na.png,"p1,1,0\n', "cannot parse t.csv"),
    ],
)
def test_malformed_tables_are_one_line_naming_file_line_and_column(tmp_path, text, message):
    (tmp_path / "t.csv").write_text(text)
    with pytest.raises(CxrError, match=message) as info:
        read_csv_table(tmp_path / "t.csv", ["path", "patient_id"], nonblank=["path", "patient_id"])
    assert "\n" not in str(info.value) and "t.csv" in str(info.value)


def test_a_bom_and_trailing_commas_are_read_and_lines_count_from_the_file(tmp_path):
    (tmp_path / "t.csv").write_text(
        "\ufeff" + HEADER + ",\n\na.png,p1,1,0,\n\nb.png,p2,0,1,\nc.png,p3,1,maybe,\n", encoding="utf-8"
    )
    table = read_csv_table(tmp_path / "t.csv", ["path"])
    assert list(table.columns) == ["path", "patient_id", "Mass", "Nodule"]
    assert table["path"].tolist() == ["a.png", "b.png", "c.png"]
    with pytest.raises(CxrError, match="t.csv line 6: column 'Nodule' holds 'maybe'"):
        parse_labels(table, ["Mass", "Nodule"], "t.csv")


def test_long_values_are_cut_when_echoed(tmp_path):
    value = "x" * 300
    (tmp_path / "t.csv").write_text(f"{HEADER}\na.png,p1,{value},0\n")
    with pytest.raises(CxrError) as info:
        parse_labels(read_csv_table(tmp_path / "t.csv"), ["Mass"], "t.csv")
    assert "x" * 41 not in str(info.value) and "(300 characters)" in str(info.value)
    assert shown("short") == "'short'" and len(shown("y" * 1000)) < 70


def test_a_ragged_nih_data_entry_file_is_refused_from_the_command_line(tmp_path, capsys):
    rows = write_release(tmp_path / "nih", patients=6)
    csv = tmp_path / "nih" / "Data_Entry_2017.csv"
    lines = csv.read_text().splitlines()
    lines[3] = lines[3].replace(",PA,", ",PA,extra,").replace(",AP,", ",AP,extra,")  # a shifted row
    csv.write_text("\n".join(lines) + "\n")
    with pytest.raises(SystemExit) as exit_info:
        main(["prepare", "--data-dir", str(tmp_path / "nih"), "--study-dir", str(tmp_path / "s"), "--no-cache"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1
    assert "Data_Entry_2017.csv line 4 has 12 fields but the header 11" in err
    lines[3] = lines[3].replace(",extra,", ",")
    lines[2] = lines[2].replace(rows[1]["image_id"], "")  # a blank image id
    csv.write_text("\n".join(lines) + "\n")
    with pytest.raises(CxrError, match="Data_Entry_2017.csv line 3: column 'Image Index' is blank"):
        read_nih(tmp_path / "nih")


def test_generate_resolves_labels_archs_and_repeats_once(tmp_path, log_lines):
    study = make_hand_study(tmp_path / "s", {"Pleural Effusion": None, "Mass": None}, n_patients=16)
    settings = GridSettings(
        labels=["Effusion", "Pleural Effusion", "pleural effusion", "Mass"],
        resolutions=[16, 16],
        archs=["ResNet34", "resnet34"],
        seeds=[0, 0],
    )
    cells = generate(study, settings)
    assert sorted(c.name for c in cells) == ["mass__resnet34__r16__s0", "pleural-effusion__resnet34__r16__s0"]
    assert [n for n in log_lines if "studied once" in n] == [
        (
            "note: labels naming a column already chosen are studied once: 'Pleural Effusion' (= 'Pleural Effusion'), "
            "'pleural effusion' (= 'Pleural Effusion')"
        )
    ]
    assert any("architectures given more than once" in n for n in log_lines)
    grid = json.loads((study / "study.json").read_text())["grid"]
    assert grid["labels"] == ["Pleural Effusion", "Mass"] and grid["archs"] == ["resnet34"] and grid["seeds"] == [0]
