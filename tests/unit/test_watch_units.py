"""The watcher's pure parts (stylempi.cli.watch): a job's argv, blob names, what is a candidate."""
from __future__ import annotations

import sys

import pytest

from stylempi import storage
from stylempi.cli import watch


def test_build_job_argv():
    plain = watch.build_job_argv(None, "/w/in.mp4", "/w/out.mp4", "m.pth")
    assert plain == [sys.executable, "-m", "stylempi.cli", "run", "/w/in.mp4", "/w/out.mp4", "--model", "m.pth"]
    mpi = watch.build_job_argv("mpirun -n 4 --bind-to 'a b'", "/w/i x.mp4", "/w/o.mp4", "m", ["--crf", "20"])
    assert mpi[:5] == ["mpirun", "-n", "4", "--bind-to", "a b"] and mpi[5:] == plain[:4] + ["/w/i x.mp4", "/w/o.mp4", "--model", "m", "--crf", "20"]
    sb = watch.build_job_argv("sbatch --wait slurm/stylempi.sbatch {input} {output} {model}",
                              "/w/in;rm -rf.mp4", "/w/o.mp4", "m")
    assert sb == ["sbatch", "--wait", "slurm/stylempi.sbatch", "/w/in;rm -rf.mp4", "/w/o.mp4", "m"]


def test_safe_relative_name():
    assert watch.safe_relative_name("../../evil.mp4") == "evil.mp4"
    assert watch.safe_relative_name("a/./b//..\\c.mp4") == "a/b/c.mp4"
    assert watch.safe_relative_name("..") == ""


def test_candidates_exclude_own_things():
    account = storage.parse_account_url("http://127.0.0.1:1/devstoreaccount1")
    w = watch.Watcher(watch.WatchConfig(storage.parse_blob_url("az://box/in", account),
                                        storage.parse_blob_url("az://box/in/styled/", account), "m"))
    info = lambda name, **md: storage.BlobInfo(name=name, size=1, etag="e", metadata=md)  # noqa: E731
    assert w.is_candidate(info("in/a.mp4")) and w.is_candidate(info("in/sub/b.MKV"))
    for name in ("in/styled/a.mp4", "in/failed/a.mp4", "in/.stylempi/done/a.mp4", "in/a.txt",
                 "in/a.mp4.report.json", "inx/a.mp4", "other/a.mp4"):
        assert not w.is_candidate(info(name)), name
    assert not w.is_candidate(info("in/x.mp4", stylempi_role="output"))
    assert w.output_location("sub/a.mpg").blob == "in/styled/sub/a.mp4"
    with pytest.raises(Exception, match="contains SOURCE"):
        watch.Watcher(watch.WatchConfig(storage.parse_blob_url("az://box/in/x/", account),
                                        storage.parse_blob_url("az://box/in/", account), "m"))
