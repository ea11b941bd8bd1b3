"""One vocabulary: every option documented with its default, one definition per setting, names = recorded names."""

import json
import os
import subprocess
import sys
from dataclasses import fields

import click
import pytest
from conftest import make_hand_study

from monai_cxr import __version__
from monai_cxr.cli import ALIASES, GRID_OPTIONS, OPTIONS, cli, main
from monai_cxr.grid.settings import DERIVED, GridSettings

STAGES = ("prepare", "generate", "run")


def visible_options(command):
    return [p for p in command.params if isinstance(p, click.Option) and not p.hidden]


@pytest.mark.parametrize("name", sorted(cli.commands))
def test_every_option_has_help_and_shows_its_default(name):
    for param in visible_options(cli.commands[name]):
        assert param.help and param.help.strip(), f"{name} {param.opts[0]} has no help"
        assert param.required or param.show_default not in (None, False), f"{name} {param.opts[0]} hides its default"
        assert not (param.is_flag and not param.secondary_opts and param.default), (
            f"{name} {param.opts[0]}: a flag that is on by default cannot be turned off"
        )
        assert param.is_flag or param.type.name != "boolean", f"{name} {param.opts[0]}"
        assert not (not param.is_flag and param.flag_value not in (None, False, True)), (
            f"{name} {param.opts[0]} has a hidden value for its bare form"
        )


def test_study_takes_every_option_of_the_stages_with_the_same_definition():
    study = {p.name: p for p in cli.commands["study"].params}
    for stage in STAGES:
        for param in cli.commands[stage].params:
            if param.name in ("no_cache", "study_dir"):  # study always caches; its study dir has a default
                continue
            assert param.name in study, f"study lacks {stage} {param.opts[0]}"
            other = study[param.name]
            assert (other.opts, type(other.type), other.help) == (
                param.opts,
                type(param.type),
                param.help,
            ) or param.name == "resolutions", f"{stage} and study define {param.opts[0]} differently"


def test_each_stage_option_is_defined_once_under_its_setting_name():
    for stage in (*STAGES, "study"):
        for param in cli.commands[stage].params:
            if param.name in ("no_cache", "preset", "dry_run"):
                continue
            assert param.name in OPTIONS, f"{stage} {param.opts[0]} is not from the shared definitions"
            assert param.opts[0] == "--" + param.name.replace("_", "-"), f"{param.opts[0]} sets {param.name}"


def test_grid_options_are_the_recorded_grid_settings():
    names = {name for name in GRID_OPTIONS if name not in ALIASES}
    assert names == {f.name for f in fields(GridSettings)} - set(DERIVED)


def test_old_names_set_the_new_settings(tmp_path):
    study = make_hand_study(tmp_path / "study", {"Mass": lambda i: i % 2}, n_patients=12)
    main(
        [
            "generate",
            "--study-dir",
            str(study),
            "--labels",
            "Mass",
            "--resolutions",
            "16",
            "--batch-size",
            "4",
            "--subsample",
            "8",
            "--lr",
            "0.05",
            "--num-workers",
            "2",
        ]
    )
    grid = json.loads((study / "study.json").read_text())["grid"]
    assert (grid["learning_rate"], grid["loader_workers"]) == (0.05, 2)
    assert "lr" not in grid and "num_workers" not in grid


def test_version(capsys):
    main(["--version"])  # returns (exit status 0)
    assert capsys.readouterr().out.strip() == f"monai-cxr {__version__}"


def test_delong_score_columns_are_comma_separated_or_repeated(tmp_path, capsys):
    path = tmp_path / "scores.csv"
    path.write_text("y,a,b\n0,0.1,0.3\n0,0.4,0.2\n1,0.35,0.8\n1,0.8,0.7\n0,0.2,0.1\n1,0.9,0.6\n")
    outputs = []
    for cols in (["--score-col", "a,b"], ["--score-col", "a", "--score-col", "b"]):
        main(["delong", str(path), "--truth-col", "y", *cols, "--json"])
        outputs.append(json.loads(capsys.readouterr().out))
    assert outputs[0] == outputs[1]
    assert [s["name"] for s in outputs[0]["scores"]] == ["a", "b"] and len(outputs[0]["pairs"]) == 1


def completion(words: str, cword: int, kind: str = "bash_complete") -> str:
    env = {**os.environ, "_MONAI_CXR_COMPLETE": kind, "COMP_WORDS": words, "COMP_CWORD": str(cword)}
    proc = subprocess.run(
        [sys.executable, "-c", "from monai_cxr.cli import main; main()"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_shell_completion_as_documented():
    assert "_monai_cxr_completion" in completion("", 0, "bash_source")  # the script docs/cli.md evals
    assert "plain,study" in completion("monai-cxr stu", 1).splitlines()
    assert {"plain,fp16", "plain,bf16"} <= set(completion("monai-cxr study --amp ", 3).splitlines())
