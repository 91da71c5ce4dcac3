"""The Azure ML style component's real command line, run the way Azure ML runs it.

Azure ML substitutes every ``${{inputs.X}}`` / ``${{outputs.X}}`` of the
component's ``command`` with the value as it is, drops a ``$[[...]]`` block
whose inputs were not given, and runs the line in a shell on every MPI rank,
from the uploaded code (the repository root). :func:`render` does the same
substitution, and the test runs the result under ``mpirun -n 2 bash -c`` with a
tiny model. The names come from an uploader: they contain quotes, spaces, ``;``,
``$(...)`` and backquotes, which must reach stylempi as plain characters (the
component puts every value in a quoted here-document, which no shell expands).
"""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from clips import basic_clip, save_test_model
from conftest import ROOT, mpirun_path, stylempi

yaml = pytest.importorskip("yaml")

COMPONENT = ROOT / "azure" / "style_component.yml"
BLOCK = re.compile(r"\$\[\[(.*?)\]\]", re.S)
PLACEHOLDER = re.compile(r"\$\{\{(inputs|outputs)\.(\w+)\}\}")


def render(command: str, inputs: dict[str, str], outputs: dict[str, str]) -> str:
    """COMMAND with the values pasted in, as Azure ML does (no quoting of its own)."""
    values = {"inputs": inputs, "outputs": outputs}

    def block(match: re.Match) -> str:
        names = PLACEHOLDER.findall(match.group(1))
        return match.group(1) if all(n in values[kind] for kind, n in names) else ""

    command = BLOCK.sub(block, command)
    return PLACEHOLDER.sub(lambda m: values[m.group(1)][m.group(2)], command)


def component() -> dict:
    return yaml.safe_load(COMPONENT.read_text(encoding="utf-8"))


def with_defaults(given: dict[str, str]) -> dict[str, str]:
    defaults = {name: str(spec["default"]) for name, spec in component()["inputs"].items()
                if "default" in spec}
    return {**defaults, **given}


def test_render_drops_optional_blocks_and_keeps_given_ones():
    line = render("run ${{inputs.a}} $[[--crf ${{inputs.crf}}]] $[[--codec ${{inputs.codec}}]]",
                  {"a": "x", "crf": "20"}, {})
    assert line.split() == ["run", "x", "--crf", "20"]


HOSTILE_NAME = "my clip; touch PWNED $(touch PWNED2) `touch PWNED3`.mp4"
#: The name that closed the single quotes the component used to put around each value.
QUOTE_NAME = "a'b; touch PWNED5;'.mp4"


@pytest.mark.slow
def test_component_command_runs_under_mpirun_with_hostile_names(tmp_path: Path):
    # Azure ML mounts a uri_file input under its blob's own name: hostile as well.
    mounts = tmp_path / "mnt"
    (mounts / "video").mkdir(parents=True)
    (mounts / "styled").mkdir()
    video = basic_clip(mounts / "video" / QUOTE_NAME, frames=8)
    model = save_test_model(mounts / "tiny model.pth")
    line = render(component()["command"],
                  with_defaults({"video": str(video), "model": str(model),
                                 "output_name": HOSTILE_NAME + " " + QUOTE_NAME, "device": "cpu",
                                 "precision": "fp32", "batch_size": "4"}),
                  {"styled": str(mounts / "styled")})
    assert "$[[" not in line and "${{" not in line

    # The uploaded code, as the job's working directory (a name that escapes its
    # quotes then litters this folder, not the checkout).
    code = tmp_path / "code"
    code.mkdir()
    (code / "azure").symlink_to(ROOT / "azure")
    proc = subprocess.run([mpirun_path(), "-n", "2", "bash", "-c", line], cwd=code,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{line}\n{proc.stdout}\n{proc.stderr}"
    assert "on 2 ranks" in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    result = mounts / "styled" / (HOSTILE_NAME + " " + QUOTE_NAME)
    assert result.is_file(), sorted(p.name for p in (mounts / "styled").iterdir())
    for place in (code, tmp_path, mounts, mounts / "styled"):
        assert not list(place.glob("PWNED*")), f"the shell ran part of a name in {place}"
    verified = stylempi("verify", video, result, timeout=120)
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_every_value_is_a_line_of_the_quoted_here_document():
    """No value is ever a shell word: each is a KEY=VALUE line between <<'END' and END."""
    spec = component()
    inputs = {name: f"in {name}; $(x) `y` ' * \\" for name in spec["inputs"]}
    outputs = {name: f"out {name}; '$(x)" for name in spec["outputs"]}
    lines = render(spec["command"], inputs, outputs).splitlines()
    opener = lines[0]
    marker = re.fullmatch(r"python azure/run_stylempi\.py --inputs-from-stdin <<'(\w+)'", opener)
    assert marker, opener
    end = lines.index(marker.group(1))
    assert lines[end + 1:] == [], "nothing may follow the here-document"
    body = lines[1:end]
    for value in (*inputs.values(), *outputs.values()):
        assert any(line.split("=", 1)[1].startswith(value) for line in body), value


def test_the_launcher_refuses_inputs_a_line_break_split():
    """A line break in a value leaves a line that is no KEY=VALUE: one line, exit 2."""
    spec = component()
    inputs = with_defaults({"video": "/v/a.mp4", "model": "/m.pth",
                            "output_name": "x.mp4\nrm -rf /"})
    text = render(spec["command"], inputs, {"styled": "/out"}).splitlines()
    body = "\n".join(text[1:-1]) + "\n"
    proc = subprocess.run([sys.executable, str(ROOT / "azure" / "run_stylempi.py"),
                           "--inputs-from-stdin"], input=body, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "unexpected input line" in proc.stderr, proc.stderr
