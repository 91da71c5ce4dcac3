"""A preemption storm: kill -9 a random rank again and again, rerun the same command, until done.

Spot and low-priority nodes are taken away without warning, repeatedly. This
runs a job of many chunks on RANKS ranks (``mpirun``, the real ``stylempi run``
CLI), and until ``--kills`` kills have happened: starts the same command, waits
a random moment (a quarter of the time during start-up, otherwise after a
random 1-4 chunks of new progress plus up to 0.3 s), SIGKILLs one
random rank (mpirun then ends the others, as when a node is lost), and starts
the same command again. The last run is left to finish. Then:

* the output must pass ``stylempi verify`` and decode to exactly the frames of
  an uninterrupted run of the same command;
* the last run's summary must report reused chunks;
* no finished chunk is ever redone (each chunk record is written once: its
  mtime never changes across reruns);
* the work redone per kill (frames the network stylized in the killed run whose
  chunks did not finish, from rank 0's progress lines) is at most the chunks in
  flight: two per rank (one in the encoder, the next through the network).

    python benchmarks/preemption.py            # 40 kills, 960 frames of 256x192, 240 chunks, 3 ranks
    python benchmarks/preemption.py --kills 3 --frames 160 --size 128x96 --json out.json   # CI: 40 chunks

Nothing here is timed; the figures are counts (kills survived, chunks redone).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

SUMMARY = re.compile(r"stylempi: (\d+) frames .*?; (\d+) chunks, (\d+) reused")
PROGRESS = re.compile(r"stylempi: progress: (\d+)/\d+ frames")


def _records(job_root: Path) -> dict[int, tuple[int, int]]:
    """Finished chunks: index -> (mtime_ns of its record, its frames)."""
    out = {}
    for path in job_root.glob("*/chunk-*.json"):
        try:
            out[int(path.stem.split("-")[1])] = (path.stat().st_mtime_ns, json.loads(path.read_text())["frames"])
        except (OSError, ValueError, IndexError, KeyError):
            continue
    return out


def _last_progress(stderr: str) -> int | None:
    """Frames done (reused + stylized) in rank 0's last progress line."""
    found = PROGRESS.findall(stderr)
    return int(found[-1]) if found else None


def _planned(job_root: Path) -> int | None:
    """How many chunks the job has (its plan.json), once rank 0 has planned."""
    for path in job_root.glob("*/plan.json"):
        try:
            return len(json.loads(path.read_text())["chunks"])
        except (OSError, ValueError, KeyError):
            return None
    return None


def _rank_pids(launcher: int) -> list[int]:
    """The stylempi ranks started under the mpirun process LAUNCHER."""
    parents: dict[int, int] = {}
    cmdlines: dict[int, list[bytes]] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdlines[int(entry.name)] = (entry / "cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue

    def under(pid: int) -> bool:
        for _ in range(10):
            pid = parents.get(pid, 0)
            if pid == launcher:
                return True
            if pid <= 1:
                return False
        return False
    return sorted(pid for pid, argv in cmdlines.items()
                  if any(a.endswith(b"stylempi") for a in argv) and b"run" in argv and under(pid))


def _frames(path: Path) -> list:
    import av
    with av.open(str(path)) as c:
        return [(f.pts, f.to_ndarray(format="rgb24").tobytes()) for f in c.decode(video=0)]


def storm(work: Path, *, ranks: int = 3, frames: int = 960, chunk_frames: int = 4, kills: int = 40,
          seed: int = 0, size: tuple[int, int] = (256, 192), timeout: float = 300) -> dict:
    rng = random.Random(seed)
    clip = common.make_clip(work / "clip.mp4", width=size[0], height=size[1], frames=frames, gop=chunk_frames)
    model = common.random_model(work / "w8.pth", 8)
    # Rank 0 prints a progress line at every update: frames through the network so far.
    env = common.mpi_env({"OMP_NUM_THREADS": "1", "STYLEMPI_PROGRESS": "0", "STYLEMPI_PROGRESS_EVERY": "0.001"})

    def command(output: Path) -> list[str]:
        return common.mpirun(ranks, [*common.stylempi_cli(), "run", clip, output, "--model", model,
                                     "--chunk-frames", str(chunk_frames), "--batch-size", "1", "--compile", "off"])

    reference = work / "reference.mp4"
    common.run_timed(command(reference), env=env, timeout=timeout)
    output = work / "out.mp4"
    job_root = work / f".{output.name}.stylempi"
    runs: list[dict] = []
    finished: dict[int, int] = {}
    while True:
        at_start = _records(job_root)
        proc = subprocess.Popen([str(a) for a in command(output)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=env, start_new_session=True)
        run: dict = {"run": len(runs) + 1, "done_at_start": len(at_start)}
        if len([r for r in runs if r.get("killed")]) < kills:
            deadline = time.monotonic() + timeout
            if rng.random() < 0.25:
                time.sleep(rng.uniform(0.2, 2.0))  # during start-up: Python, torch and MPI loading
                run["moment"] = "start-up"
            else:
                wanted = rng.randint(1, 4)
                while proc.poll() is None and len(_records(job_root)) - len(at_start) < wanted \
                        and time.monotonic() < deadline:
                    time.sleep(0.02)
                time.sleep(rng.uniform(0, 0.3))
                run["moment"] = f"after {wanted} new chunk(s)"
            planned = _planned(job_root)
            pids = _rank_pids(proc.pid) if proc.poll() is None else []
            if planned is not None and len(_records(job_root)) >= planned - 2 * ranks:
                pids = []  # nearly done: a kill now could land after the join, when nothing is left to redo
                run["moment"] = "none: nearly done"
            if pids:
                victim = rng.choice(pids)
                os.kill(victim, signal.SIGKILL)
                run.update(killed=True, victim_rank=pids.index(victim))
        out, err = proc.communicate(timeout=timeout)
        if proc.returncode != 0 and output.is_file() and not any(job_root.glob("*/plan.json")):
            run["killed"] = False  # the kill landed after the join: the job had finished
            proc.returncode = 0
        after = _records(job_root) if proc.returncode != 0 else {}
        rewritten = [i for i, ns in finished.items() if i in after and after[i] != ns]
        if rewritten:
            raise AssertionError(f"finished chunks {rewritten} were redone by run {run['run']} ({run}; "
                                 f"earlier runs {runs}):\n{err[-3000:]}")
        finished.update(after)
        run.update(returncode=proc.returncode, done_after=len(after) if proc.returncode else None)
        if os.environ.get("STYLEMPI_STORM_DEBUG"):
            print(run, file=sys.stderr, flush=True)
        if run.get("killed"):
            # Frames the network stylized in this run whose chunks did not finish: the next run
            # does them again. From rank 0's last progress line, so a lower bound when it lagged.
            seen = _last_progress(err)
            run["redone_frames"] = max(0, seen - sum(f for _, f in after.values())) if seen is not None else None
        runs.append(run)
        if proc.returncode == 0:
            match = SUMMARY.search(out)
            if match is None:
                raise AssertionError(f"no summary line in the last run's output:\n{out[-2000:]}\n{err[-2000:]}")
            total_frames, chunks, reused = map(int, match.groups())
            break
        if not run.get("killed"):
            raise AssertionError(f"run {run['run']} failed without a kill:\n{err[-3000:]}")
        if len(runs) > kills + 20:
            raise AssertionError("the storm does not end")
    verify = subprocess.run([*common.stylempi_cli(), "verify", str(clip), str(output)], capture_output=True,
                            text=True, env=env, timeout=timeout)
    killed = [r for r in runs if r.get("killed")]
    redone = [r["redone_frames"] for r in killed if r.get("redone_frames") is not None]
    return {
        "ranks": ranks, "frames": total_frames, "chunks": chunks, "chunk_frames": chunk_frames,
        "runs": len(runs), "kills": len(killed), "reused_in_last_run": reused,
        "kills_at_start_up": sum(1 for r in killed if r.get("moment") == "start-up"),
        "redone_frames_per_kill": redone, "max_redone_frames_per_kill": max(redone, default=0),
        "mean_redone_frames_per_kill": sum(redone) / len(redone) if redone else 0.0,
        # Two chunks per rank can be in flight: one in the encoder, the next through the network.
        "in_flight_bound_frames": 2 * ranks * chunk_frames,
        "verify_ok": verify.returncode == 0,
        "same_frames_as_uninterrupted": _frames(output) == _frames(reference),
        "same_bytes_as_uninterrupted": output.read_bytes() == reference.read_bytes(),
        "history": runs,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kills", type=int, default=40)
    ap.add_argument("--frames", type=int, default=960)
    ap.add_argument("--chunk-frames", type=int, default=4)
    ap.add_argument("--ranks", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", default="256x192", help="frame size WxH of the generated clip")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="stylempi-storm-") as tmp:
        result = storm(Path(tmp), ranks=args.ranks, frames=args.frames, chunk_frames=args.chunk_frames,
                       kills=args.kills, seed=args.seed, size=tuple(map(int, args.size.split("x"))))
    print(f"{result['kills']} kills ({result['kills_at_start_up']} during start-up) survived in {result['runs']} "
          f"runs of a {result['chunks']}-chunk job on {result['ranks']} ranks; frames redone per kill: max {result['max_redone_frames_per_kill']}, mean "
          f"{result['mean_redone_frames_per_kill']:.1f} (in flight at most {result['in_flight_bound_frames']}: "
          f"two chunks of {result['chunk_frames']} frames per rank); last run reused "
          f"{result['reused_in_last_run']} chunks; verify {'ok' if result['verify_ok'] else 'FAILED'}; frames "
          f"{'identical' if result['same_frames_as_uninterrupted'] else 'DIFFERENT'} to an uninterrupted run "
          f"(bytes {'identical' if result['same_bytes_as_uninterrupted'] else 'differ'})", flush=True)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0 if result["verify_ok"] and result["same_frames_as_uninterrupted"] else 1


if __name__ == "__main__":
    sys.exit(main())
