"""The resume key: a digest of everything that decides a job's pixels and chunk boundaries.

A rerun with the same key reuses the finished chunks in the work dir of that key
(stylempi.job.workfiles); any change of the key starts over in a new one. What enters it is
declared once, on the fields of :class:`~stylempi.options.RunOptions` (their metadata:
:func:`~stylempi.options.in_key` names the entries a field decides,
:func:`~stylempi.options.not_in_key` says why it changes no pixel). :func:`job_key` takes exactly
the declared entries, as rank 0 resolved them (stylempi.job.prepare), and refuses a missing or an
undeclared one, so a new option cannot silently reuse chunks made without it.

Keys of existing work dirs must never change for the same settings, or their work is lost: an entry
added later is left out at the value that means "as before" (``omitted_at``), and
``tests/unit/test_key.py`` pins keys made before the declarations existed.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

from .. import __version__
from ..errors import InternalError
from ..options import ALWAYS, KEY, KeyEntry, NotInKey, RunOptions

#: Bumped when the segment format or chunking changes, so old work is never reused.
WORK_FORMAT = 2


def declared_entries(options_type: type = RunOptions) -> dict[str, Any]:
    """Every key entry the options' fields declare, with the value at which it is left out."""
    entries: dict[str, Any] = {}
    for f in dataclasses.fields(options_type):
        how = f.metadata.get(KEY)
        if isinstance(how, NotInKey):
            continue
        if not isinstance(how, KeyEntry):
            raise InternalError(f"{options_type.__name__}.{f.name} does not say whether it changes pixels: "
                                "declare it with in_key(...) or not_in_key(why) (stylempi.options)")
        for name in how.entries:  # an entry is left out where any field says so (they must agree)
            known = entries.setdefault(name, how.omitted_at)
            if how.omitted_at is not ALWAYS:
                if known is not ALWAYS and known != how.omitted_at:
                    raise InternalError(f"the resume key entry {name!r} is left out at two different values")
                entries[name] = how.omitted_at
    return entries


def job_key(values: dict[str, Any], options_type: type = RunOptions) -> str:
    """A digest of VALUES (each declared entry, as rank 0 resolved it), the work format and the version."""
    declared = declared_entries(options_type)
    if set(values) != set(declared):
        raise InternalError(f"the resume key's entries differ from those declared: missing "
                            f"{sorted(set(declared) - set(values))}, undeclared {sorted(set(values) - set(declared))}")
    identity = {"format": WORK_FORMAT, "stylempi": __version__}
    for name, value in values.items():
        omitted_at = declared[name]
        if omitted_at is ALWAYS or value != omitted_at:
            identity[name] = value
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
