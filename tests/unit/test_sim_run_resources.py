"""run --sim stays off what the machine's live daemon uses."""

from __future__ import annotations

import io
import json
from pathlib import Path

from oomkit.cli import main

REPO = Path(__file__).resolve().parents[2]
DEFAULT = str(REPO / "examples" / "default.toml")


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(list(argv), out)
    return code, out.getvalue()


def test_a_simulation_leaves_the_live_daemons_metrics_port_alone(tmp_path: Path) -> None:
    """run --sim serves no metrics on the live daemon's address (the recommended config's
    127.0.0.1:9727, or the default without a config): a daemon (re)started meanwhile
    would find it taken. An address of the user's own choosing is served."""
    cfg = tmp_path / "c.toml"
    for i, listen in enumerate(('[metrics]\nlisten = "127.0.0.1:9727"\n',
                                '[metrics]\nlisten = "0.0.0.0:9727"\n', "")):
        cfg.write_text(listen + '[[oom]]\npolicy = "largest_leaf"\n')
        state = tmp_path / f"state{i}"
        assert run("run", "--sim", DEFAULT, "--config", str(cfg), "--state-dir", str(state),
                   "--quiet")[0] == 0
        assert json.loads((state / "status.json").read_text())["metrics"] is None, listen
    state = tmp_path / "cli"
    assert run("run", "--sim", DEFAULT, "--oom-policy", "largest_leaf", "--quiet",
               "--state-dir", str(state))[0] == 0
    assert json.loads((state / "status.json").read_text())["metrics"] is None
    cfg.write_text('[metrics]\nlisten = "127.0.0.1:0"\n[[oom]]\npolicy = "largest_leaf"\n')
    state = tmp_path / "own"
    assert run("run", "--sim", DEFAULT, "--config", str(cfg), "--state-dir", str(state),
               "--quiet")[0] == 0
    served = json.loads((state / "status.json").read_text())["metrics"]
    assert served.startswith("127.0.0.1:") and not served.endswith(":9727")
