"""Core types: validation names the culprit, fingerprints are stable, JSON round-trips losslessly."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from advisor.core import (
    VM,
    Bounds,
    Cluster,
    Forecast,
    Host,
    HostState,
    Migration,
    MigrationReason,
    Plan,
    PlanFigures,
    PlanStatus,
    PowerModel,
    Rules,
    VMForecast,
)
from advisor.errors import InputError


def small_cluster(**rules: object) -> Cluster:
    hosts = (
        Host("h1", 16, 65536),
        Host(
            "h2",
            32,
            131072,
            power=PowerModel(curve_w=(86, 89.4, 92.6, 96, 99.5, 102, 106, 108, 112, 114, 117)),
        ),
        Host("h3", 16, 65536, state=HostState.MAINTENANCE),
    )
    vms = (VM("a", "h1", 2, 4096), VM("b", "h2", 4, 8192, labels={"app": "db"}), VM("c", "h3", 1, 2048))
    return Cluster("c1", hosts, vms, Rules(**rules))  # type: ignore[arg-type]


def test_cluster_round_trip_and_fingerprint_is_stable() -> None:
    c = small_cluster(anti_affinity=(("a", "b"),), pins={"c": ("h1", "h2")})
    again = Cluster.from_dict(json.loads(json.dumps(c.to_dict())))
    assert again == c
    assert again.fingerprint() == c.fingerprint()


def test_fingerprint_changes_with_the_state_the_planner_reads() -> None:
    c = small_cluster()
    assert c.with_placement({"a": "h2"}).fingerprint() != c.fingerprint()
    moved_host = replace(c, hosts=(replace(c.hosts[0], state=HostState.MAINTENANCE), *c.hosts[1:]))
    assert moved_host.fingerprint() != c.fingerprint()


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: Cluster("c", (Host("h", 8, 1024), Host("h", 8, 1024)), ()), "duplicate host name 'h'"),
        (
            lambda: Cluster("c", (Host("h", 8, 1024),), (VM("v", "h", 1, 512), VM("v", "h", 1, 512))),
            "duplicate VM",
        ),
        (
            lambda: Cluster("c", (Host("h", 8, 1024),), (VM("v", "nowhere", 1, 512),)),
            "unknown host 'nowhere'",
        ),
        (lambda: Cluster("c", (Host("h", 8, 1024),), (VM("v", "h", 1, 4096),)), "more than any usable host"),
        (lambda: Host("h", -1, 1024), "host h: cpu_cores must be a positive number"),
        (lambda: Host("h", float("nan"), 1024), "cpu_cores"),
        (lambda: Host("h", 8, 1024, state="broken"), "state 'broken' is not one of"),  # type: ignore[arg-type]
        (lambda: VM("v", "h", 0, 512), "VM v: vcpus"),
        (lambda: PowerModel(idle_w=200, max_w=100), "below power.idle_w"),
        (lambda: small_cluster(affinity=(("a", "zz"),)), "rules.affinity: unknown VM 'zz'"),
        (lambda: small_cluster(pins={"a": ("h9",)}), "pinned to unknown host 'h9'"),
        (lambda: Rules(anti_affinity=(("a",),)), "needs at least two VMs"),
    ],
)
def test_bad_inventory_is_named(build: object, message: str) -> None:
    with pytest.raises(InputError, match=message):
        build()  # type: ignore[operator]


def test_power_model_linear_and_piecewise() -> None:
    assert PowerModel(100, 200).watts(0.25) == pytest.approx(125)
    g4 = PowerModel(curve_w=(86, 89.4, 92.6, 96, 99.5, 102, 106, 108, 112, 114, 117))
    assert g4.watts(0.05) == pytest.approx((86 + 89.4) / 2)
    assert g4.watts(1.5) == 117 and g4.idle_w == 86 and g4.max_w == 117


def test_forecast_check_covers_names_missing_vms() -> None:
    c = small_cluster()
    fc = Forecast(
        datetime(2026, 1, 1, tzinfo=UTC), 86400, "naive", c.fingerprint(), {"a": VMForecast(1, 2, 3, 4)}
    )
    with pytest.raises(InputError, match="no entry for 2 VM"):
        fc.check_covers(c)
    assert Forecast.from_dict(fc.to_dict()) == fc
    with pytest.raises(InputError, match="finite non-negative"):
        VMForecast(float("nan"), 1, 1, 1)


names = st.text(alphabet="abcdefghij-_0123456789", min_size=1, max_size=8)
floats = st.floats(min_value=0, max_value=1e6, allow_nan=False)
figures = st.builds(PlanFigures, st.integers(0, 1000), floats, floats, floats, st.integers(0, 1000))
migrations = st.builds(
    Migration,
    names,
    names,
    names,
    st.sampled_from(list(MigrationReason)),
    st.integers(0, 50),
    floats,
    floats,
    floats,
    st.booleans(),
)
plans = st.builds(
    Plan,
    cluster=names,
    cluster_fingerprint=names,
    forecast_fingerprint=names,
    created_at=st.datetimes(timezones=st.just(UTC)),
    goal=st.sampled_from(["consolidate", "balance"]),
    status=st.sampled_from(list(PlanStatus)),
    solver=names,
    placement=st.dictionaries(names, names, max_size=20),
    migrations=st.lists(migrations, max_size=10).map(tuple),
    standby=st.lists(names, max_size=5).map(tuple),
    before=figures,
    after=figures,
    bounds=st.builds(Bounds, st.integers(0, 100), st.integers(0, 100), floats),
    blocking_vms=st.lists(names, max_size=3).map(tuple),
    message=st.text(max_size=40),
    solve_s=floats,
)


@given(plans)
def test_plan_json_round_trips_losslessly(plan: Plan) -> None:
    text = plan.to_json()
    assert json.loads(text)["schema_version"] == 1
    assert Plan.from_json(text) == plan


def test_plan_from_other_schema_or_bad_json_is_refused() -> None:
    with pytest.raises(InputError, match="schema_version 99"):
        Plan.from_dict({"schema_version": 99})
    with pytest.raises(InputError, match="not valid JSON"):
        Plan.from_json("{", "p.json")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda d: d["hosts"][0].update(cpu_cores=-4),
            "c.json: host h1: cpu_cores must be a positive number",
        ),
        (lambda d: d["vms"][0].update(host="ghost"), "c.json: VM a: runs on unknown host 'ghost'"),
        (lambda d: d["vms"][0].pop("mem_mib"), "c.json: .*mem_mib"),
        (lambda d: d["hosts"][1]["power"].update(curve_w=[5, 3]), "c.json: power.curve_w must not decrease"),
        (lambda d: d.pop("hosts"), "c.json: missing key 'hosts'"),
    ],
)
def test_bad_cluster_file_names_the_file_and_the_culprit(edit: object, message: str) -> None:
    data = small_cluster().to_dict()
    edit(data)  # type: ignore[operator]
    with pytest.raises(InputError, match=message):
        Cluster.from_dict(data, "c.json")
