"""The bundle's file names and the error that refuses a bundle.

Shared by `edge.bundle` (reading the manifest and the files) and `edge.signing` (checking
`manifest.sig`), which `edge.bundle` calls; both modules and their users import them from here
or, as before, from `edge.bundle`.
"""

from __future__ import annotations

MANIFEST_NAME = "manifest.json"
SIGNATURE_NAME = "manifest.sig"


class BundleError(Exception):
    """A bundle that must not be loaded; the message says which file and why."""
