"""The MPI job: options checked and chunks planned on rank 0 (prepare, plan, key), every rank
stylizing and encoding its chunks (worker), rank 0 joining them (run), with the work dir's
files and lock (workfiles, worklock), progress, MPI (comm) and mpirun's exit (launcher).

Owns the job's phases; imports stylempi.options, network, media, colour, errors and
stylempi.storage's local files, never stylempi.storage's Blob code, training, tools or cli.
Deliberately empty: import the module you need (stylempi.job.run.run_job).
"""
