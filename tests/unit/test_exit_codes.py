"""The exit codes the CLI's docstring and the README promise are the ones stylempi.errors defines."""
from __future__ import annotations

import re

from conftest import ROOT
from stylempi import cli, errors
from stylempi.job.launcher import shared_error_exit

README = (ROOT / "README.md").read_text(encoding="utf-8")


def _error_classes(cls: type = errors.StylempiError) -> list[type]:
    return [cls] + [c for sub in cls.__subclasses__() for c in _error_classes(sub)]


def test_every_error_class_has_a_documented_code():
    defined = {c.exit_code for c in _error_classes() if c.__module__ == errors.__name__}
    assert defined | {errors.EXIT_OK} == set(errors.EXIT_CODES)


def test_cli_docstring_lists_exactly_the_codes_of_errors_py():
    listed = ", ".join(f"{code} {meaning}" for code, meaning in errors.EXIT_CODES.items())
    assert f"Exit codes: {listed}." in " ".join(cli.__doc__.split())


def test_readme_codes_exist_in_errors_py():
    sentence = re.search(r"non-zero exit code: (.*?)\. The", " ".join(README.split()))
    assert sentence, "README: the exit codes sentence under 'When things go wrong' moved"
    codes = {int(c) for c in re.findall(r"(?:^|, )(\d+) ", sentence.group(1))}
    assert codes and codes <= set(errors.EXIT_CODES)
    assert codes >= set(errors.EXIT_CODES) - {errors.EXIT_OK, errors.StylempiError.exit_code}


def test_outside_mpi_the_code_is_unchanged():
    assert shared_error_exit(3, shared=True) == 3
    assert shared_error_exit(4, shared=False) == 4

