"""``stylempi watch``: stylize every video uploaded under a Blob prefix, exactly once.

::

    stylempi watch az://incoming/ --output az://styled/ --model candy.pth \\
        [--launcher "mpirun -n 4"] [--poll 30] [--attempts 3] [--once]

Each poll lists SOURCE. A blob is a candidate when its name has a video
extension and it is none of the watcher's own things: the control prefix
``SOURCE/.stylempi/``, the ``SOURCE/failed/`` prefix, anything under DEST
(DEST may lie under SOURCE), and any blob whose metadata marks it as a stylempi
output or report.

Exactly once, with any number of watchers:

1. **claim**: take a 60 s blob lease on the input (renewed in the background
   while the job runs). A blob leased by another watcher is skipped. A crashed
   watcher's lease simply runs out, so its input is picked up again.
2. **check**: with the lease held, look for the done marker
   ``SOURCE/.stylempi/done/NAME`` recording this input's ETag; present means
   another watcher finished it (between our listing and our claim): skip.
3. **run** the job on local copies in a private work dir (blob names are
   turned into flat, harmless file names: a name with ``../`` cannot write
   outside it). The job is ``stylempi run IN OUT --model M`` in a child process,
   prefixed by ``--launcher`` (e.g. ``mpirun -n 4``, ``sbatch --wait ...``;
   split with shlex, never run through a shell; ``{input}``, ``{output}`` and
   ``{model}`` in the launcher are replaced instead of appending the command);
   with ``--in-process`` it calls :func:`stylempi.job.run.run_job` directly. Either
   way ``--run-args`` are ``stylempi run`` options, read by its own parser and
   checked once when the watcher starts.
4. **publish**: upload the output (blocks committed last) to DEST and a JSON
   report beside it (``OUTPUT.report.json``), then write the done marker, then
   release the lease. The output blob's metadata names the input and its ETag,
   so the output itself is the record that the work is done: a watcher that
   dies after the output's commit but before the marker leaves nothing to
   redo; the next claim of the input (step 2) finds the output, writes the
   missing report and marker, and never runs or writes the output twice.
5. **fail**: a failed run increments ``SOURCE/.stylempi/attempts/NAME``; after
   ``--attempts`` failures (default 3) the input moves to ``SOURCE/failed/NAME``
   with ``NAME.error.json`` beside it, instead of being retried forever.

SIGINT/SIGTERM stop the watcher cleanly: a running job is terminated (its
whole process group), its lease released (so another watcher may take it up at
once), no attempt is counted, and the exit status is 0.

Modules: :mod:`.watcher` (the polling loop, one input's claim, run and
outcome), :mod:`.records` (leases, done markers, attempt counts, reports in
Blob storage), :mod:`.jobs` (the job in a child process or in this one),
:mod:`.command` (the ``watch`` subcommand).

Part of the command line (the top layer): it may import stylempi.storage and stylempi.job;
nothing but stylempi.cli imports it.
"""
from .command import add_parser, add_watch_arguments, watch_main
from .jobs import build_job_argv, check_run_args, parse_run_args
from .records import (CONTROL, FAILED, INPUT_ETAG_KEY, INPUT_KEY, LEASE_SECONDS, ROLE_KEY, Claim, Ledger,
                      safe_relative_name)
from .watcher import OUTPUT_EXTENSIONS, WatchConfig, Watcher

__all__ = ["CONTROL", "FAILED", "INPUT_ETAG_KEY", "INPUT_KEY", "LEASE_SECONDS", "OUTPUT_EXTENSIONS", "ROLE_KEY",
           "Claim", "Ledger", "WatchConfig", "Watcher", "add_parser", "add_watch_arguments",
           "build_job_argv", "check_run_args", "parse_run_args", "safe_relative_name",
           "watch_main"]
