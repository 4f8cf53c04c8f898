"""The deterministic simulated kernel."""

from oomkit.kernel.sim.kernel import SimKernel
from oomkit.kernel.sim.scenario import (
    CgroupSpec,
    MachineSpec,
    ProcessSpec,
    Scenario,
    Step,
    load_scenario,
    parse_scenario,
)

__all__ = [
    "CgroupSpec",
    "MachineSpec",
    "ProcessSpec",
    "Scenario",
    "SimKernel",
    "Step",
    "load_scenario",
    "parse_scenario",
]
