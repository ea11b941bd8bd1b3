"""Names are data: labels, column names and paths reach configs and file names only as inert values."""

import json
import re
from pathlib import Path

from table_layout import write_table

from monai_cxr.cli import main
from monai_cxr.grid.generate import GridSettings, generate

# MONAI evaluates "$..." and resolves "@id", rewrites "#" inside strings; "%" and "{}" are format
# syntax; the rest is shell, length and nothing-but-punctuation.
NAMES = ["Mass$x^2$", "a#b", "@x", "%y", "{z}", "'; rm -rf /", "L" + "o" * 300 + "ng", "!!!", "Plain"]


def test_hostile_label_columns_go_from_a_table_to_bundles_only_as_data(tmp_path):
    write_table(tmp_path, patients=16, labels=NAMES)
    study = tmp_path / "st@dy $p {q} %r"  # the study path is user text too (only '#' is refused)
    main(
        [
            "prepare",
            "--dataset",
            "csv",
            "--table",
            str(tmp_path / "tables/study.csv"),
            "--path-col",
            "file",
            "--patient-col",
            "subject",
            "--label-cols",
            ",".join(NAMES),
            "--study-dir",
            str(study),
            "--resolutions",
            "16",
            "--workers",
            "1",
            "--val-fraction",
            "0.25",
            "--test-fraction",
            "0.25",
        ]
    )
    assert json.loads((study / "study.json").read_text())["data"]["labels"] == NAMES
    cells = generate(study, GridSettings(labels=NAMES, resolutions=[16], epochs=1, batch_size=4, subsample=8))
    assert len({cell.name for cell in cells}) == len(NAMES)

    def configs(cell):  # the configs (settings, not documents) with the cell's own folder taken out
        return {
            p.name: p.read_text().replace(str(cell), "CELL")
            for p in sorted((cell / "configs").glob("*"))
            if p.name != "metadata.json"
        }

    plain = configs(cells[-1])
    for name, cell in zip(NAMES, cells):
        assert re.fullmatch(r"[a-z0-9-]{1,49}__resnet34__r16__s0", cell.name), cell.name
        assert json.loads((cell / "cell.json").read_text())["label"] == name
        assert json.loads((cell / "datalist.json").read_text())["label_name"] == name
        assert configs(cell) == plain  # the label reaches the configs only through the folder's name
        meta = json.loads((cell / "configs" / "metadata.json").read_text())  # documents name it in plain words
        assert re.fullmatch(r"[A-Za-z0-9 _-]+", name) or name not in json.dumps(meta, ensure_ascii=False)

    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(cells[0] / "configs" / "train.json"), str(cells[0] / "configs" / "override.json")])
    parser["bundle_root"] = str(cells[0])  # what running from the cell folder ('.') means
    assert Path(parser.get_parsed_content("datalist_file")) == cells[0] / "datalist.json"
    assert Path(parser.get_parsed_content("cache_file")).resolve() == study.resolve() / "data" / "cache" / "r16.npy"
    assert not list(tmp_path.rglob("rm -rf*"))  # nothing was executed or created from a name
