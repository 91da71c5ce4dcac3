"""The MPI job: options checked and chunks planned on rank 0 (prepare, plan, key), every rank
stylizing and encoding its chunks (worker), rank 0 joining them (run), with the work dir's
files and lock (workfiles, worklock), remote files through any storage backend (staging),
progress, MPI (comm) and mpirun's exit (launcher).

Owns the job's phases; imports stylempi.options, network, media, colour, errors, stylempi.storage's
local files and its backend protocol (backend, worklease), never stylempi.storage.azure (Blob
storage is only one backend), training, tools or cli.
Deliberately empty: import the module you need (stylempi.job.run.run_job).
"""
