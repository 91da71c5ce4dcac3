"""``stylempi run`` with Blob URLs (or any storage backend's) and no filesystem shared between ranks.

:class:`staged_run` wraps the job on every rank; the job itself only ever sees
local paths, and calls back into :class:`JobStaging` (the
:class:`stylempi.options.Staging` the job needs) at the points where files must
move:

* INPUT (remote): downloaded **once per node**: the first rank of each
  storage group (the ranks of one node, :meth:`Comm.share_on_node`)
  downloads it into its temp dir, the node's other ranks wait for it and
  decode from that file (:meth:`JobStaging.rank_paths` gives each rank its
  node's copy). Per node rather than ranged reads by chunk: rank 0 reads the
  whole file anyway (the frame index is a packet scan, the join copies every
  audio packet), and a seek in MP4/MKV reads the container index at either end
  of the file, so ranged reads would save little and cost a request per read.
* ``--model`` (remote): rank 0 alone downloads it (only rank 0 reads it; the
  bytes travel to the others inside the plan).
* OUTPUT (remote): rank 0 assembles into its temp dir, then
  :meth:`JobStaging.publish` uploads it (blocks committed last) before the
  chunks are deleted.
* Work dir: remote when ``--work-dir`` is a Blob URL, or when OUTPUT is
  remote and no ``--work-dir`` is given (then beside OUTPUT, as locally).
  Each rank keeps its segments in a rank-local dir and
  :meth:`JobStaging.push_chunk` uploads each finished one (segment first, its
  record last); :meth:`JobStaging.pull_chunks` gives rank 0 the finished chunks
  of an earlier, killed run, and :meth:`JobStaging.fetch_chunks` the chunks
  other ranks made. Rank 0 holds a lease on the work root's ``lock`` blob for
  the job's life (one job per OUTPUT: stylempi.job.worklock).

With a local ``--work-dir`` (and remote INPUT/OUTPUT) the work dir must be
shared by all ranks, exactly as without Blob storage. Each rank's temp dir is
removed even when the rank is killed (stylempi.storage.tempdirs).

Everything here goes through the storage backend protocol (stylempi.storage.backend): a
location is remote when a registered backend serves its URL's scheme, and Blob storage is
only the backend registered for ``az://``, ``http://`` and ``https://``.
"""
from __future__ import annotations

import dataclasses
import json
import re
import sys
from pathlib import Path
from typing import Any

from ..errors import StorageFailure, StylempiError
from ..storage.backend import (Location, Missing, Place, backend_for_scheme, parent_key, place, safe_local_name,
                               served, service_name)
from ..storage.tempdirs import reaped_temp_dir, remove as remove_temp_dir
from ..storage.worklease import WorkLease
from .comm import SharedError
from .workfiles import finished_pairs, record_name, record_path, segment_matches, segment_name, segment_path
from .worklock import LOCK_NAME

_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,200}$")


def _check_name(name: str) -> str:
    if not _NAME_RE.match(name) or ".." in name:
        raise ValueError(f"work-dir entry names are flat file names, not {name!r}")
    return name


class WorkDir:
    """A job's work dir under a prefix of a storage backend: entry NAME is the object ``PREFIX/NAME``.

    Flat names only (letters, digits, ``._-``), as in a local work dir. Files go
    up with the backend's ``put`` (complete or absent), so an entry is either
    absent or complete.
    """

    def __init__(self, prefix: Place):
        self.prefix = prefix.as_prefix()

    def _loc(self, name: str) -> Place:
        return self.prefix.child(_check_name(name))

    def put_file(self, local_path: str | Path, name: str) -> None:
        """Store a copy of LOCAL_PATH as NAME (replacing it)."""
        self._loc(name).put(local_path)

    def get_file(self, name: str, local_path: str | Path) -> bool:
        """Copy NAME to LOCAL_PATH; False when NAME is absent."""
        try:
            self._loc(name).get(local_path)
            return True
        except Missing:
            return False

    def get_json(self, name: str) -> Any | None:
        """The JSON object stored as NAME, or None when absent (or torn, or foreign)."""
        try:
            data = self._loc(name).read(64 * 1024 * 1024)
        except Missing:
            return None
        try:
            return json.loads(data)
        except ValueError:
            return None

    def list(self) -> list[str]:
        """Names of all complete entries, sorted (deeper objects are not entries)."""
        start = len(self.prefix.key)
        return sorted(key[start:] for key in self.prefix.list()
                      if "/" not in key[start:] and _NAME_RE.match(key[start:]))

    def __str__(self) -> str:
        return str(self.prefix)


def BlobWorkDir(prefix: Location) -> WorkDir:
    """The work dir under a :class:`~stylempi.storage.azure.urls.BlobLocation` (for callers
    that hold one rather than a URL): served by the backend registered for ``az://``."""
    return WorkDir(Place(backend_for_scheme("az"), prefix))


class JobStaging:
    """The remote side of one rank's job (module docstring); made by :class:`staged_run`.

    OPTIONS is the job's :class:`~stylempi.options.RunOptions`; only its four
    locations are read: ``input``, ``output``, ``model``, ``work_dir``. ACCOUNT_URL is
    ``--account-url``, handed to the backends as their ``account_url`` setting.
    """

    def __init__(self, options: Any, account_url: str | None, rank: int):
        self.rank = rank
        settings = {"account_url": account_url}
        #: Rank 0 names the transfers that take a while (a stage line), unless --quiet.
        self.tell = rank == 0 and not getattr(options, "quiet", False)
        self.remote_input = self._remote(options.input, settings)
        self.remote_output = self._remote(options.output, settings)
        self.remote_model = self._remote(options.model, settings)
        work = options.work_dir
        if served(work):
            self.remote_work: Place | None = place(work, settings).as_prefix()
        elif work is None and self.remote_output is not None:
            self.remote_work = self.remote_output.with_key(parent_key(self.remote_output.key))
        else:
            self.remote_work = None
        self.root = reaped_temp_dir(f"stylempi-r{rank}-")  # removed even if the rank is killed
        self._local_input: str | None = None
        self._job_prefix: Place | None = None
        self._lease: WorkLease | None = None  # rank 0's, on the work root

    @staticmethod
    def _remote(location: str | None, settings: dict) -> Place | None:
        return place(location, settings) if served(location) else None

    @property
    def active(self) -> bool:
        return any((self.remote_input, self.remote_output, self.remote_model, self.remote_work))

    def localize(self, comm: Any) -> dict[str, str]:
        """Download what this rank needs; the local path of each remote location, by
        :class:`~stylempi.options.RunOptions` field name.

        Every rank must call it (the node's ranks wait for their leader's download).
        """
        local: dict[str, str] = {}
        if self.remote_input is not None:
            self._stage(f"downloading {self.remote_input} from {service_name(self.remote_input)} (once per node)")
            local["input"] = self._local_input = self._node_copy(self.remote_input, comm)
        if self.remote_model is not None:
            dest = self.root / "model" / safe_local_name(self.remote_model.key)
            if comm.is_root:
                self._stage(f"downloading the model {self.remote_model} from {service_name(self.remote_model)}")
                self.remote_model.get(dest)
            local["model"] = str(dest)
        if self.remote_output is not None:
            (self.root / "output").mkdir()
            local["output"] = str(self.root / "output" / safe_local_name(self.remote_output.key))
        if self.remote_work is not None:
            local["work_dir"] = str(self.root / "work")
            (self.root / "work").mkdir()
        return local

    def _stage(self, text: str) -> None:
        """A stage line, before a transfer starts (the job's own are stylempi.progress's)."""
        if self.tell:
            print(f"stylempi: {text}", file=sys.stderr, flush=True)

    def _node_copy(self, loc: Place, comm: Any) -> str:
        """Path of LOC on this node's disk: the node leader downloads, the others wait for it."""
        shared: str | None = None
        try:
            if comm.node_leader:
                dest = self.root / "input" / safe_local_name(loc.key)
                loc.get(dest)
                shared = str(dest)
        finally:  # a failed download still releases the node's waiting ranks
            shared = comm.share_on_node(shared)
        if shared is None:
            raise StorageFailure(f"cannot download {loc}: it failed on this node's downloading rank")
        return shared

    # The job's side (stylempi.options.Staging) ----------------------------------
    def _prefix_for(self, job_dir: Path | str) -> Place:
        job_dir = Path(job_dir)
        assert self.remote_work is not None
        return self.remote_work.child(f"{job_dir.parent.name}/{job_dir.name}/")

    def lock_work(self, job_dir: str, output: str) -> None:
        """Rank 0, while planning: lease the remote work root for the job's life (one job per OUTPUT)."""
        if self.remote_work is None:
            return
        shown = str(self.remote_output) if self.remote_output is not None else output
        self._lease = WorkLease.acquire(self.remote_work.child(f"{Path(job_dir).parent.name}/{LOCK_NAME}"), shown)

    def pull_chunks(self, job_dir: str) -> None:
        """Rank 0, while planning: copy finished chunks of an earlier run into JOB_DIR."""
        if self.remote_work is None:
            return
        work = WorkDir(self._prefix_for(job_dir))
        for segment, record in finished_pairs(work.list()):
            work.get_file(segment, Path(job_dir) / segment)
            work.get_file(record, Path(job_dir) / record)

    def rank_paths(self, input: str, job_dir: str) -> tuple[str, str]:
        """Every rank, after planning: the input file and the job dir this rank uses
        (its node's copy of a remote input; a rank-local dir for a remote work dir)."""
        if self._local_input is not None:
            input = self._local_input
        if self.remote_work is not None:
            self._job_prefix = self._prefix_for(job_dir)
            local = self.root / "work" / Path(job_dir).parent.name / Path(job_dir).name
            local.mkdir(parents=True, exist_ok=True)
            job_dir = str(local)
        return input, job_dir

    def push_chunk(self, segment: Path, record: Path) -> None:
        """Any rank: a chunk is durable locally; make it durable in remote storage too."""
        if self._job_prefix is None:
            return
        work = WorkDir(self._job_prefix)
        work.put_file(segment, segment.name)
        work.put_file(record, record.name)  # the record last: it marks the chunk done

    def fetch_chunks(self, job_dir: str, indexes: list[int]) -> None:
        """Rank 0, before joining: download the segments other ranks made."""
        if self._job_prefix is None:
            return
        work = WorkDir(self._job_prefix)
        for i in indexes:
            path = segment_path(job_dir, i)
            if not path.is_file() and not work.get_file(segment_name(i), path):
                raise StorageFailure(f"chunk {i} is missing from the work dir {self._job_prefix}")
            local_record = record_path(job_dir, i)
            record = json.loads(local_record.read_text()) if local_record.is_file() \
                else work.get_json(record_name(i))
            if record and record.get("sha256") and not segment_matches(path, record):
                raise StorageFailure(f"chunk {i} from {self._job_prefix} does not match its checksum")

    def publish(self, local_output: str) -> str:
        """Rank 0, after joining: upload OUTPUT; then drop the remote chunks. Returns OUTPUT for display."""
        if self._lease is not None and self._lease.lost:
            raise StorageFailure(f"lost the lease on the work dir ({self._lease.loc}): another job may "
                                 "have taken it over; rerun the same command")
        if self.remote_output is None:
            shown = local_output
        else:
            self._stage(f"uploading the output to {self.remote_output}")
            self.remote_output.put(local_output)
            shown = str(self.remote_output)
        if self._job_prefix is not None:
            lock = self._lease.lock.key if self._lease is not None else None
            for key in self._job_prefix.with_key(parent_key(self._job_prefix.key)).list():
                if key != lock:  # leased: deleted last, with the lease
                    self._job_prefix.with_key(key).delete()
        if self._lease is not None:
            self._lease.release(delete=True)
            self._lease = None
        return shown

    def cleanup(self) -> None:
        """Remove this rank's temp dir. Called after the job's last collective, so no rank
        of the node still reads the input copy the node leader keeps there."""
        if self._lease is not None:  # a failed job: the work stays, the lease goes
            self._lease.release()
            self._lease = None
        remove_temp_dir(self.root)


class staged_run:
    """``with staged_run(options, account_url, comm) as options:`` around ``run_job``.

    A no-op when nothing is remote. Otherwise every rank localizes its inputs
    and gets OPTIONS with local paths and its :class:`JobStaging`; a failure on
    any rank is shared (:meth:`Comm.first_error`) so that every rank stops with
    the same message (printed once, by rank 0) instead of leaving others waiting.
    """

    def __init__(self, options: Any, account_url: str | None, comm: Any):
        self.options, self.account_url, self.comm = options, account_url, comm
        self.staging: JobStaging | None = None

    def __enter__(self):
        options, error = self.options, None
        try:
            staging = JobStaging(self.options, self.account_url, self.comm.rank)
            if staging.active:
                self.staging = staging
                options = dataclasses.replace(self.options, **staging.localize(self.comm), staging=staging)
            else:
                staging.cleanup()
        except StylempiError as e:
            error = (f"rank {self.comm.rank}: {e}" if self.comm.size > 1 else str(e), e.exit_code)
        first = self.comm.first_error(error)
        if first is not None:
            if self.staging is not None:
                self.staging.cleanup()
            raise SharedError(first[0], first[1], reported=not self.comm.is_root)
        return options

    def __exit__(self, *exc):
        if self.staging is not None:
            self.staging.cleanup()
        return False
