"""Azure Blob Storage: URLs (urls), credentials (auth), errors as one line (failures),
transfers and leases on blobs (blobs), and all of it as a storage backend (backend).

Imports only stylempi.errors, stylempi.storage's local modules (files, holders) and its backend
protocol (backend), and the Azure SDK inside functions; never staging, worklease, media, network,
the job, tools or cli. The public names are re-exported by stylempi.storage.
"""
