"""What oomkit knows about itself as an installed distribution."""

from __future__ import annotations


def package_version() -> str:
    """The installed distribution's version (``importlib.metadata``), else the source's
    ``oomkit.__version__`` (a checkout run without installing)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("oomkit")
    except PackageNotFoundError:
        from oomkit import __version__

        return __version__
