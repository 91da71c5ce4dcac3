"""stylempi.storage.safefiles: the paths a job names itself never follow a planted link."""
from __future__ import annotations

import os

import pytest

from stylempi.errors import OutputFailure
from stylempi.storage.safefiles import (create_file, fd_name, make_dir, open_lock_file, probe_writable,
                                        refuse_link, remove_tree, replacing)


@pytest.fixture
def victim(tmp_path):
    target = tmp_path / "victim"
    target.write_bytes(b"precious")
    return target


def test_create_file_refuses_a_link_and_leaves_it(victim, tmp_path):
    link = tmp_path / "partial"
    link.symlink_to(victim)
    with pytest.raises(OutputFailure, match="symbolic link"):
        create_file(link, "the partial OUTPUT")
    assert link.is_symlink() and victim.read_bytes() == b"precious"
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "nowhere")
    with pytest.raises(OutputFailure, match="symbolic link"):
        create_file(dangling, "a chunk file")
    assert not (tmp_path / "nowhere").exists()


def test_create_file_replaces_a_leftover_plain_file(tmp_path):
    leftover = tmp_path / "chunk.partial.nut"
    leftover.write_bytes(b"old")
    fd = create_file(leftover, "a chunk file")
    try:
        with open(fd_name(fd, leftover), "wb") as f:  # what FFmpeg does with the name
            f.write(b"new")
    finally:
        os.close(fd)
    assert leftover.read_bytes() == b"new"


def test_make_dir_refuses_a_link_or_a_file_and_accepts_its_own_dir(victim, tmp_path):
    (tmp_path / "target").mkdir()
    link = tmp_path / "work"
    link.symlink_to(tmp_path / "target", target_is_directory=True)
    with pytest.raises(OutputFailure, match="symbolic link"):
        make_dir(link, "the work dir")
    with pytest.raises(OutputFailure, match="is a file"):
        make_dir(victim, "the work dir")
    assert make_dir(tmp_path / "new", "the work dir").is_dir()
    assert make_dir(tmp_path / "new", "the work dir").is_dir()  # already there: fine


def test_lock_files_and_trees_never_go_through_a_link(victim, tmp_path):
    link = tmp_path / "lock"
    link.symlink_to(victim)
    with pytest.raises(OutputFailure, match="symbolic link"):
        open_lock_file(link, "the lock file")
    with pytest.raises(OutputFailure, match="symbolic link"):
        remove_tree(link, "an entry of the work dir")
    with pytest.raises(OutputFailure, match="symbolic link"):
        refuse_link(link, "OUTPUT's lock file")
    refuse_link(tmp_path / "missing", "anything")
    refuse_link(victim / "under-a-file", "anything")  # not a folder: left to whatever makes it
    assert victim.read_bytes() == b"precious"


def test_replacing_renames_over_a_link_and_leaves_its_target(victim, tmp_path):
    out = tmp_path / "sheet.png"
    out.symlink_to(victim)
    with replacing(out, "--out") as tmp:
        with open(tmp, "wb") as f:
            f.write(b"sheet")
    assert not out.is_symlink() and out.read_bytes() == b"sheet" and victim.read_bytes() == b"precious"
    with pytest.raises(RuntimeError):
        with replacing(out, "--out") as tmp:
            open(tmp, "wb").close()
            raise RuntimeError("failed half-way")
    assert out.read_bytes() == b"sheet"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sheet.png", "victim"]


def test_probe_writable_leaves_nothing(tmp_path):
    probe_writable(tmp_path)
    assert list(tmp_path.iterdir()) == []
