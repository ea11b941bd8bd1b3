"""Write docs/cli.md, the command-line reference, from the click commands themselves.

    python -m monai_cxr.clidoc --write     # regenerate docs/cli.md
    python -m monai_cxr.clidoc            # print it

The reference walks the ``monai-cxr`` group: each command's usage, help and every option
with its type, default and help. Types and defaults are formatted here rather than by click's
help formatter, so the file is the same on every click version the package allows; a test
regenerates it and fails when the committed file is stale.
"""

from __future__ import annotations

import argparse
import inspect
import sys
from pathlib import Path

import click

from monai_cxr.cli import _int_list, _seed_list, _shown, _str_list, cli

__all__ = ["DOC_PATH", "REGENERATE", "render"]

DOC_PATH = Path(__file__).resolve().parents[1] / "docs" / "cli.md"
REGENERATE = "python -m monai_cxr.clidoc --write"
# the order of the flow; any other command follows in name order
ORDER = ("synth", "prepare", "generate", "run", "report", "study", "probe", "delong")

PREAMBLE = f"""\
# The `monai-cxr` command line

<!-- Generated from the commands by `{REGENERATE}`; edit the commands, not this file. -->

`monai-cxr COMMAND --help` prints the same, for one command; `monai-cxr --version` prints the version.
A user's mistake is one line on standard error and exit status 2; a failed cell makes `run` and
`study` exit with 1.

## One vocabulary

- **An option sets the setting of its name.** `--learning-rate` is `learning_rate` in
  `study.json`, `--loader-workers` is `loader_workers`, and so on; `study` takes every option
  of `prepare`, `generate` and `run` under the same name, with the same type and help.
- **Lists are comma-separated**: `--labels Mass,Nodule`, `--resolutions 32,64,128`, `--seeds 0,1,2`,
  `delong --score-col a,b` (a repeated `--score-col` also adds columns).
- **Switches come in pairs** (`--channels-last/--no-channels-last`, `--balanced/--unbalanced`), so
  `study` can turn off what a preset turns on. No option has a hidden value: `--amp` takes
  `off`, `fp16` or `bf16`.
- **Two kinds of workers.** `--workers`: processes that decode and resize images (`synth`, and
  the resize cache of `prepare` and `study`). `--loader-workers`: PyTorch DataLoader workers of
  each training cell (the template bundle's `num_workers`).
- **Two kinds of seeds.** `--seed`: the patient split (`prepare`, `study`) or the phantom
  (`synth`). `--seeds`: the training seeds, one cell each.
- **Presets are defaults.** `study --preset quick|paper` fills every setting; an option given
  wins over the preset's value, and `study.json` records the merged settings (and, under
  `study`, which were given). `study --dry-run` prints them, the cells and the work, and
  writes nothing.
- Old names still accepted, not listed: `--lr` (= `--learning-rate`), `--num-workers`
  (= `--loader-workers`).

## Shell completion

click completes commands, options and choices. For bash, add to `~/.bashrc`:

    eval "$(_MONAI_CXR_COMPLETE=bash_source monai-cxr)"

zsh: `eval "$(_MONAI_CXR_COMPLETE=zsh_source monai-cxr)"` in `~/.zshrc`; fish:
`_MONAI_CXR_COMPLETE=fish_source monai-cxr > ~/.config/fish/completions/monai-cxr.fish`.
"""

LIST_CALLBACKS = {
    _int_list: "comma-separated integers",
    _seed_list: "comma-separated integers",
    _str_list: "comma-separated names",
}


def _bound(value, open_: bool, strict: str, loose: str) -> str:
    return f"{strict if open_ else loose} {value:g}"


def describe_type(param: click.Option) -> str:
    """The option's type in words (its values for a choice, its bounds for a range)."""
    kind = param.type
    if param.is_flag:
        return "switch" if param.secondary_opts else "flag"
    if param.callback in LIST_CALLBACKS:
        return LIST_CALLBACKS[param.callback]
    if isinstance(kind, click.Choice):
        return "one of " + ", ".join(f"`{c}`" for c in kind.choices)
    if isinstance(kind, (click.IntRange, click.FloatRange)):
        name = "integer" if isinstance(kind, click.IntRange) else "number"
        bounds = []
        if kind.min is not None:
            bounds.append(_bound(kind.min, kind.min_open, ">", ">="))
        if kind.max is not None:
            bounds.append(_bound(kind.max, kind.max_open, "<", "<="))
        return f"{name} {' and '.join(bounds)}".strip()
    if isinstance(kind, click.Path):
        return "folder" if not kind.file_okay else "file" if not kind.dir_okay else "path"
    return {"integer": "integer", "float": "number", "text": "text"}.get(kind.name, kind.name)


def describe_default(param: click.Option) -> str:
    """The option's default as the command line shows it (its own text where it names one)."""
    if param.required:
        return "required"
    if isinstance(param.show_default, str):
        return param.show_default
    if param.is_flag and param.secondary_opts:
        opts = param.opts if param.default else param.secondary_opts
        return f"`{opts[0]}`"
    if param.is_flag:
        return "off"
    if param.default is None:
        return "none"
    return f"`{_shown(param.default)}`"


def _usage(name: str, command: click.Command) -> str:
    args = [p.human_readable_name for p in command.params if isinstance(p, click.Argument)]
    return " ".join(["monai-cxr", name, "[OPTIONS]", *args])


def _command(name: str, command: click.Command) -> list[str]:
    lines = [f"## monai-cxr {name}", "", f"    {_usage(name, command)}", "", inspect.cleandoc(command.help or ""), ""]
    for param in command.params:
        if isinstance(param, click.Argument) or getattr(param, "hidden", False):
            continue
        names = ", ".join(f"`{opt}`" for opt in [*param.opts, *param.secondary_opts])
        help_text = " ".join((param.help or "").split())
        lines.append(f"- {names} ({describe_type(param)}; default: {describe_default(param)}): {help_text}")
    lines.append("- `-h`, `--help`: show the command's help and exit.")
    return [*lines, ""]


def render() -> str:
    """The text of docs/cli.md."""
    ctx = click.Context(cli, info_name="monai-cxr")
    names = [n for n in ORDER if n in cli.commands] + sorted(set(cli.list_commands(ctx)) - set(ORDER))
    lines = [
        PREAMBLE,
        "## monai-cxr",
        "",
        "    monai-cxr [OPTIONS] COMMAND [ARGS]...",
        "",
        inspect.cleandoc(cli.help or ""),
        "",
        "- `--version`: print the version and exit.",
        "- `-h`, `--help`: list the commands and exit.",
        "",
    ]
    for name in names:
        lines += _command(name, cli.commands[name])
    return "\n".join(lines).rstrip("\n") + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Print (or --write) docs/cli.md, generated from the commands.")
    parser.add_argument("--write", action="store_true", help=f"write {DOC_PATH}")
    args = parser.parse_args(argv)
    text = render()
    if args.write:
        DOC_PATH.write_text(text)
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    main()
