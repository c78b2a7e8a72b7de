"""The edge of the simulator: trace specs, settings to setup and policy, one run."""

from __future__ import annotations

from advisor.config import SimulateSettings
from advisor.errors import InputError
from advisor.simulate.advisor_policy import AdvisorPolicy, AdvisorSettings
from advisor.simulate.baseline import BASELINES, Consolidation
from advisor.simulate.datacentre import planetlab_datacentre
from advisor.simulate.engine import CLOUDSIM, Policy, Progress, Result, Setup, replay
from advisor.simulate.online_forecast import OnlineSettings
from advisor.simulate.trace import Day, load_day

POLICIES = (*BASELINES, "advisor")


def load_trace(spec: str) -> Day:
    """`planetlab:FILE` (the only trace kind so far)."""
    kind, _, path = spec.partition(":")
    if kind != "planetlab" or not path:
        raise InputError(f"--trace {spec}: expected planetlab:FILE")
    return load_day(path)


def make_setup(s: SimulateSettings) -> Setup:
    if s.setup == "cloudsim":
        return CLOUDSIM
    return Setup(
        name="realistic",
        standby_after_s=s.standby_after_s,
        standby_w=s.standby_w,
        bandwidth_mibps=s.bandwidth_mibps,
        max_downtime_ms=s.max_downtime_ms,
        dirty_mibps_per_core=s.dirty_mibps_per_core,
    )


def make_policy(name: str, s: SimulateSettings) -> Policy:
    if name == "advisor":
        forecast = OnlineSettings(forecast_every=s.forecast_every_steps)
        return AdvisorPolicy(AdvisorSettings(s.headroom, s.cooldown_steps, s.payback_h, forecast))
    if name not in BASELINES:
        raise InputError(f"simulate.policy: unknown policy {name} (one of {', '.join(POLICIES)})")
    return Consolidation(name, BASELINES[name])


def simulate(
    day: Day, s: SimulateSettings, policy: str | None = None, progress: Progress | None = None
) -> Result:
    """One day under one policy in the configured setup, on CloudSim's 800 hosts."""
    return replay(day, planetlab_datacentre(), make_policy(policy or s.policy, s), make_setup(s), progress)
