"""Azure Blob Storage: URLs (urls), credentials (auth), errors as one line (failures),
transfers and leases on blobs (blobs), and the work dir's lease (lease).

Imports only stylempi.errors and stylempi.storage's local modules (files, holders), and the
Azure SDK inside functions; never staging, media, network, the job, tools or cli. The public
names are re-exported by stylempi.storage.
"""
