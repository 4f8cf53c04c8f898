"""What oomkit knows about itself as an installed distribution."""

from __future__ import annotations

import os
import sys

DIST_NAME = "oomkit"


def installed_version(path: list[str] | None = None) -> str | None:
    """The version in the name of oomkit's ``.dist-info`` directory on ``path`` (default
    ``sys.path``), the first one found, as the import system would find the package; None
    when there is none. The installed-project format names that directory
    ``{name}-{version}.dist-info`` (PyPA "Recording installed projects"), so no metadata
    file has to be parsed: ``importlib.metadata`` would bring the email parser and a few
    MiB of modules into a daemon that keeps (and locks) whatever it imported."""
    prefix = DIST_NAME + "-"
    for entry in sys.path if path is None else path:
        try:
            names = os.listdir(entry or ".")
        except OSError:
            continue
        for name in sorted(names):
            if name.startswith(prefix) and name.endswith(".dist-info"):
                version = name[len(prefix): -len(".dist-info")]
                if version and "-" not in version:
                    return version
    return None


def package_version() -> str:
    """The installed distribution's version (its ``.dist-info`` directory, else
    ``importlib.metadata``), else the source's ``oomkit.__version__`` (a checkout run
    without installing)."""
    found = installed_version()
    if found is not None:
        return found
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(DIST_NAME)
    except PackageNotFoundError:
        from oomkit import __version__

        return __version__
