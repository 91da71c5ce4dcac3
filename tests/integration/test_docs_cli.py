"""The README and the parser describe the same CLI; style names forgive case and typos.

The README's tables are read as text and compared with the real argparse parser
in both directions, so an option added on one side only (or a subcommand the
README forgets) fails here. Help texts themselves are not frozen: only names,
and the defaults of options that have a fixed set of choices.
"""
from __future__ import annotations

import argparse
import re

import pytest

import clips
from conftest import ROOT, stylempi
from stylempi.cli import build_parser
from stylempi.errors import ModelLoadFailure
from stylempi.network.styles import BUILTIN, builtin_checkpoint, closest_style, read_model, resolve_model

README = (ROOT / "README.md").read_text(encoding="utf-8")
OPTION = re.compile(r"(?<![\w-])(--[a-z][a-z0-9-]*|-[a-zA-Z])(?![\w-])")


def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def table_after(heading: str) -> list[list[str]]:
    """Rows (cells) of the first Markdown table after the line that starts with ``heading``."""
    lines = README.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(heading))
    rows: list[list[str]] = []
    for line in lines[start + 1:]:
        if line.startswith("|"):
            rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
        elif rows:
            break
    return rows[2:]  # header and |---| rule


def readme_run_options() -> dict[str, list[str]]:
    """First-column option names of the README's `stylempi run` table -> the row's cells."""
    found: dict[str, list[str]] = {}
    for row in table_after("`stylempi run` options:"):
        for name in OPTION.findall(row[0]):
            found[name] = row
    return found


def parser_run_options() -> dict[str, argparse.Action]:
    run = subparsers(build_parser())["run"]
    return {s: a for a in run._actions if a.option_strings and a.dest != "help" for s in a.option_strings}


def test_readme_run_table_lists_exactly_the_parsers_options():
    readme, parser = set(readme_run_options()), set(parser_run_options())
    assert readme - parser == set(), "README lists options `stylempi run` does not have"
    assert parser - readme == set(), "`stylempi run` has options the README table does not list"


def test_readme_defaults_of_choice_options_match_the_parser():
    rows, actions = readme_run_options(), parser_run_options()
    checked = 0
    for name, action in actions.items():
        if action.choices and action.default is not None and name.startswith("--"):
            assert f"`{action.default}`" in rows[name][1], f"{name}: README default vs parser"
            checked += 1
    assert checked >= 3  # --device, --precision, --compile at least


def test_readme_command_table_lists_every_subcommand():
    in_table = {row[0].strip("`").split()[1] for row in table_after("## Commands")}
    assert in_table == set(subparsers(build_parser())), "README Commands table vs the parser"


def test_help_examples_use_models_that_exist():
    epilog = build_parser().epilog
    for name in re.findall(r"--model (\S+)", epilog):
        assert name.endswith(".pth") and name == "my.pth" or builtin_checkpoint(name) is not None, name


@pytest.mark.skipif(not BUILTIN, reason="no built-in style installed")
@pytest.mark.parametrize("spelling", ["scream", "Scream", "SCREAM", " scream"])
def test_builtin_style_names_ignore_case(spelling):
    assert builtin_checkpoint(spelling) == builtin_checkpoint("scream") is not None
    assert resolve_model(spelling).name == "scream.pth"
    data, name = read_model(spelling)
    assert name == "built-in style scream" and data == builtin_checkpoint("scream").read_bytes()


def test_a_near_miss_suggests_the_style_and_run_and_preview_agree(tmp_path):
    assert closest_style("sream") == "scream" and closest_style("starry") == "starry-night"
    assert closest_style("zzzzzz") is None
    with pytest.raises(ModelLoadFailure) as from_run:
        read_model("sream")
    with pytest.raises(ModelLoadFailure) as from_preview:
        resolve_model("sream")
    assert str(from_run.value) == str(from_preview.value)
    assert "did you mean scream?" in str(from_run.value)


def test_cli_run_with_a_mistyped_style_is_one_line(tmp_path):
    clip = clips.basic_clip(tmp_path / "c.mp4", frames=4, size=(32, 32))
    result = stylempi("run", clip, tmp_path / "o.mp4", "--model", "sream")
    assert result.returncode == 4
    assert result.stderr.splitlines() == [
        "stylempi: error: --model sream: no such file and no built-in style of that name (did you mean "
        f"scream? built-in styles: {', '.join(sorted(BUILTIN))}; see `stylempi models`)"]
    assert not (tmp_path / "o.mp4").exists()


def test_cli_run_with_a_capitalised_style_works(tmp_path):
    clip = clips.basic_clip(tmp_path / "c.mp4", frames=4, size=(32, 32))
    result = stylempi("run", clip, tmp_path / "o.mp4", "--model", "Scream", "--quiet", "--compile", "off")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "o.mp4").stat().st_size > 0


def test_skip_summary_groups_missing_reference_data():
    from conftest import SHARED_ABSENT, skip_reason_counts

    reasons = [f"{SHARED_ABSENT} (/x/a.mp4; CI always has ../shared)",
               f"{SHARED_ABSENT} (/x/b.pth; CI always has ../shared)", "no CUDA GPU on this machine"]
    assert skip_reason_counts(reasons) == [(2, SHARED_ABSENT), (1, "no CUDA GPU on this machine")]
    assert "STYLEMPI_SHARED" in README
