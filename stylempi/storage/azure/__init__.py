"""Azure Blob Storage: URLs (urls), credentials (auth), errors as one line (failures),
transfers and leases on blobs (blobs), and the work dir's lease (lease).

Imports stylempi.errors, stylempi.storage.files and the holder naming of stylempi.job.worklock;
never staging, the job's phases, tools or cli. The public names are re-exported by stylempi.storage.
"""
