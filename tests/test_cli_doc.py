"""docs/cli.md is generated from the commands; a stale copy fails here (and so in CI)."""

from monai_cxr.clidoc import DOC_PATH, REGENERATE, render


def test_docs_cli_md_is_fresh():
    fresh = render()
    committed = DOC_PATH.read_text() if DOC_PATH.is_file() else ""
    assert committed == fresh, f"{DOC_PATH} is stale; regenerate it with `{REGENERATE}`"


def test_the_reference_lists_every_visible_option_with_type_and_default():
    text = render()
    assert "- `--learning-rate` (number > 0; default: `0.001`): AdamW learning rate." in text
    assert "- `--amp` (one of `off`, `fp16`, `bf16`; default: `off`)" in text
    assert "`--channels-last`, `--no-channels-last` (switch; default: `--no-channels-last`)" in text
    assert "- `--labels` (comma-separated names; default: quick: Mass,Nodule; " in text and "paper: Emphysema" in text
    assert "--lr" not in text.split("## monai-cxr\n")[1]  # old names are accepted, not listed
    assert "_MONAI_CXR_COMPLETE=bash_source monai-cxr" in text
