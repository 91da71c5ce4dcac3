"""The resume key: declared once on RunOptions' fields, and the same as before for old work dirs."""
from __future__ import annotations

import dataclasses
import hashlib
from fractions import Fraction

import pytest

from stylempi.colour.look import Look
from stylempi.colour.matrices import Colour
from stylempi.errors import InternalError
from stylempi.job import key
from stylempi.media.settings import EncodeSettings
from stylempi.options import KEY, KeyEntry, NotInKey, RunOptions, in_key, not_in_key

#: Keys made by the code before the key was declared on RunOptions (commit c4a4f13, stylempi 0.1.0,
#: prepare.job_key) from the inputs below: work dirs named by them must still resume.
OLD_KEYS = {
    "plain": "024988895d04cc27c5b786c2c45ac6b4bc17f2dc8a71d712bb2c28cba25bbf57",
    "compiled_look_engines": "6fb645a1f80fe62fd6f3f1e9d8576f3e626b5020c534cee19328440df21c135f",
    "plain_look_default_engines": "cbb86d4744f8bf1aba41f9d122d4ce192bbb069579b0f334ae725b49c70ed069",
}
INPUT = b"stylempi resume key\n" * 100
SETTINGS = EncodeSettings("libx264", "yuv420p", (("crf", "18"), ("preset", "medium")), 160, 128, Fraction(1, 25),
                          Fraction(1, 1), Colour(1, 1, 1, 1))


def values(precision="fp32", chunk_frames=8, compile_mode="auto", look=Look(), decode="cpu", convert="ffmpeg",
           temporal=None):
    """The entries as rank 0 resolves them (stylempi.job.prepare.key_values) for the inputs above."""
    return {"input_size": len(INPUT), "input_sha256": hashlib.sha256(INPUT).hexdigest(), "video_stream": 0,
            "model_sha256": hashlib.sha256(b"model").hexdigest(), "precision": precision,
            "encoding": SETTINGS.as_dict(), "chunk_frames": chunk_frames, "compile": compile_mode,
            "look": look.as_dict(), "engines": {"decode": decode, "convert": convert}, "temporal": temporal}


@pytest.fixture(autouse=True)
def version_of_the_old_keys(monkeypatch):
    monkeypatch.setattr(key, "__version__", "0.1.0")  # the key holds the version: a new one starts over


def test_keys_made_before_the_declarations_are_unchanged():
    assert key.job_key(values()) == OLD_KEYS["plain"]
    assert key.job_key(values("bf16", 12, "on", Look(scale=0.5, preserve_colors=True, matrix="bt709"), "cpu",
                              "torch")) == OLD_KEYS["compiled_look_engines"]
    assert key.job_key(values("fp16", 8, "off", Look(), "auto", "auto")) == OLD_KEYS["plain_look_default_engines"]


def test_every_run_option_says_whether_it_changes_pixels():
    undeclared = [f.name for f in dataclasses.fields(RunOptions) if not isinstance(f.metadata.get(KEY),
                                                                                  (KeyEntry, NotInKey))]
    assert undeclared == [], "declare each with in_key(...) or not_in_key(why) in stylempi/options.py"
    for f in dataclasses.fields(RunOptions):
        how = f.metadata[KEY]
        assert how.entries if isinstance(how, KeyEntry) else how.why.strip(), f.name


def test_an_undeclared_option_is_refused_at_once():
    @dataclasses.dataclass
    class Options:
        kept: int = dataclasses.field(default=0, metadata=in_key("kept"))
        forgotten: int = 0

    with pytest.raises(InternalError, match="forgotten"):
        key.declared_entries(Options)


def test_every_declared_entry_must_be_given_and_nothing_else():
    with pytest.raises(InternalError, match="look"):
        key.job_key({k: v for k, v in values().items() if k != "look"})
    with pytest.raises(InternalError, match="surprise"):
        key.job_key({**values(), "surprise": 1})


def test_an_entry_at_its_legacy_value_is_left_out_and_any_other_value_is_in():
    @dataclasses.dataclass
    class Options:
        plain: int = dataclasses.field(default=0, metadata=in_key("plain"))
        temporal: str = dataclasses.field(default="off", metadata=in_key("temporal", omitted_at="off"))
        quiet: bool = dataclasses.field(default=False, metadata=not_in_key("what is printed"))

    assert key.job_key({"plain": 1, "temporal": "off"}, Options) == key.job_key({"plain": 1}, _Bare)
    assert key.job_key({"plain": 1, "temporal": "on"}, Options) != key.job_key({"plain": 1, "temporal": "off"},
                                                                                Options)


@dataclasses.dataclass
class _Bare:
    plain: int = dataclasses.field(default=0, metadata=in_key("plain"))


def test_options_that_change_pixels_change_the_key():
    base = key.job_key(values())
    for changed in (values(precision="bf16"), values(chunk_frames=9), values(compile_mode="on"),
                    values(look=Look(scale=0.5)), values(convert="torch"),
                    values(temporal={"weight": 0.9})):  # --temporal on: its settings enter the key
        assert key.job_key(changed) != base
