"""The live-kernel commands (run, check-config, events, status)."""

from __future__ import annotations

import argparse
from typing import TextIO

from oomkit.errors import ConfigError


def dispatch(args: argparse.Namespace, out: TextIO) -> int:
    raise ConfigError(f"'oomkit {args.command}' is not available in this build yet")
