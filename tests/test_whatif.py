"""What-if scenarios: parsing, each transformation, the capacity projection, the exports and the page
(also rendered in headless Chromium)."""

from __future__ import annotations

import csv
import json
import math
import os
import re
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st
from matplotlib.image import imread

from advisor import files
from advisor.config import Config, PlanSettings, PowerSettings
from advisor.core import VM, Cluster, Forecast, Host, HostState, MigrationReason, PowerModel, VMForecast
from advisor.errors import AdvisorError
from advisor.metrics import write_metrics
from advisor.whatif import load_scenarios, parse_scenarios, run_whatif
from advisor.whatif.profile import host_hour_util, hourly_profiles
from advisor.whatif.projection import (
    Capacity,
    Demand,
    days_until_full,
    hosts_needed,
    usable_capacity,
    weekly,
)
from advisor.whatif.scenarios import DAYS_PER_MONTH, Scenario
from advisor.whatif.score import run_scenario
from advisor.whatif.transform import apply_scenario

GIB = 1024.0
T0 = datetime(2026, 2, 2, tzinfo=UTC)
CHROMIUM = Path("/usr/bin/chromium")
SUMMARY_KEYS = {
    "active_hosts",
    "energy_kwh_per_day",
    "peak_cpu_util",
    "peak_mem_util",
    "migrations",
    "days_until_full",
}


# --- a small world: 5 hosts of two types, 12 VMs, two days of hourly history --------------------------


def world() -> tuple[Cluster, Forecast, pd.DataFrame]:
    hosts = [
        Host(f"a{i}", 16, 64 * GIB, labels={"model": "a"}, power=PowerModel(100, 250, 10)) for i in (1, 2, 3)
    ] + [Host(f"b{i}", 8, 32 * GIB, labels={"model": "b"}, power=PowerModel(80, 160, 5)) for i in (1, 2)]
    on = ["a1", "a2", "a3", "b1", "b2"]
    vms = [VM(f"vm{i:02d}", on[i % 5], 2, 4 * GIB) for i in range(12)]
    cluster = Cluster("tiny", tuple(hosts), tuple(vms))
    forecast = Forecast(
        made_at=T0,
        horizon_s=86400,
        model="naive",
        cluster_fingerprint=cluster.fingerprint(),
        vms={v.name: VMForecast(0.6, 1.0, 2 * GIB, 3 * GIB, 5.0) for v in vms},
    )
    ts = [T0 - timedelta(hours=h) for h in range(48, 0, -1)]
    metrics = pd.DataFrame(
        [
            {
                "vm": v.name,
                "ts": t,
                "cpu_cores": 0.6 + 0.3 * math.sin(t.hour / 24 * 2 * math.pi),
                "mem_mib": GIB,
            }
            for v in vms
            for t in ts
        ]
    )
    return cluster, forecast, metrics


def scenario(**kw: Any) -> Scenario:
    return parse_scenarios({"scenario": [{"name": "s", "time_limit_s": 1, **kw}]})[0]


def settings(**kw: Any) -> PlanSettings:
    return PlanSettings(time_limit_s=1, workers=1, **kw)


def applied(**kw: Any):
    cluster, forecast, _ = world()
    return apply_scenario(cluster, forecast, scenario(**kw), settings(), PowerSettings())


def scored(**kw: Any):
    cluster, forecast, metrics = world()
    return run_scenario(
        cluster, forecast, hourly_profiles(metrics), scenario(**kw), settings(), PowerSettings()
    )


# --- parsing ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"scenario": [{"name": "x", "growth": 3}]}, "scenario 'x': growth: unknown key"),
        (
            {"scenario": [{"name": "x", "growth_pct": -150}]},
            "scenario 'x': growth_pct: Input should be greater",
        ),
        ({"scenario": [{"name": "x", "growth_per": "year"}]}, "scenario 'x': growth_per: Input should be"),
        ({"scenario": [{"growth_pct": 2}]}, "scenario #1: name: Field required"),
        ({"scenario": [{"name": "x", "months": 6, "plan_month": 7}]}, "plan_month (7) is beyond months (6)"),
        (
            {
                "scenario": [
                    {"name": "x", "new_vms": [{"vcpus": 2, "mem_mib": 1, "cpu_p50": 3, "cpu_p95": 2}]}
                ]
            },
            "scenario 'x': new_vms.0: Value error, cpu_p50 must not exceed cpu_p95",
        ),
        (
            {"scenario": [{"name": "x", "add_hosts": [{"type": "a", "count": 0}]}]},
            "scenario 'x': add_hosts.0.count",
        ),
        (
            {"scenario": [{"name": "x", "power": {"idle_w": 1, "wat": 2}}]},
            "scenario 'x': power.wat: unknown key",
        ),
        ({"defaults": {"months": 0}, "scenario": [{"name": "x"}]}, "scenario 'x': months: Input should be"),
        ({"scenario": [{"name": "x"}, {"name": "x"}]}, "scenario name 'x' is used twice"),
        ({"scenario": []}, "scenario: List should have at least 1 item"),
        ({"scenarios": [{"name": "x"}]}, "w.toml: scenarios: unknown key (and 1 more)"),
    ],
)
def test_bad_scenarios_name_the_scenario_and_key(data: dict, expected: str) -> None:
    with pytest.raises(AdvisorError) as e:
        parse_scenarios(data, "w.toml")
    msg = str(e.value)
    assert msg.startswith("w.toml: ") and expected in msg and "\n" not in msg


def test_scenarios_file_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(AdvisorError, match="no such scenarios file"):
        load_scenarios(tmp_path / "none.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[[scenario]\nname = 1")
    with pytest.raises(AdvisorError, match=r"bad.toml: not valid TOML"):
        load_scenarios(bad)


def test_defaults_apply_unless_the_scenario_overrides() -> None:
    a, b = parse_scenarios(
        {"defaults": {"months": 6, "growth_pct": 2}, "scenario": [{"name": "a"}, {"name": "b", "months": 3}]}
    )
    assert (a.months, a.growth_pct, b.months, b.growth_pct) == (6, 2, 3, 2)
    assert a.planned_month == 6


def test_example_file_parses() -> None:
    scenarios = load_scenarios(Path(__file__).parent.parent / "examples" / "whatif.toml")
    assert len(scenarios) == 5 and len({s.name for s in scenarios}) == 5


@given(
    pct=st.floats(min_value=-50, max_value=200),
    months=st.integers(min_value=1, max_value=60),
)
def test_growth_per_horizon_reaches_the_total_and_per_month_compounds(pct: float, months: int) -> None:
    horizon = Scenario(name="h", growth_pct=pct, growth_per="horizon", months=months)
    monthly = Scenario(name="m", growth_pct=pct, growth_per="month", months=months)
    end = months * DAYS_PER_MONTH
    assert horizon.factor_at_day(end) == pytest.approx(1 + pct / 100)
    assert monthly.factor_at_day(end) == pytest.approx((1 + pct / 100) ** months)
    assert horizon.factor_at_day(0) == monthly.factor_at_day(0) == 1.0
    days = [0, end / 3, end / 2, end]
    factors = [monthly.factor_at_day(d) for d in days]
    assert factors == sorted(factors, reverse=pct < 0)


# --- transformations --------------------------------------------------------------------------------------


def test_growth_scales_demand_and_reservations_at_the_planned_month() -> None:
    inp = applied(growth_pct=10, months=4, plan_month=2)
    assert inp.factor == pytest.approx(1.21)
    f = inp.forecast.vms["vm00"]
    assert (f.cpu_p50, f.cpu_p95, f.mem_p95) == pytest.approx((0.6 * 1.21, 1.21, 3 * GIB * 1.21))
    assert inp.cluster.vm_by_name["vm00"].mem_mib == pytest.approx(4 * GIB * 1.21)
    assert inp.forecast.cluster_fingerprint == inp.cluster.fingerprint()
    assert applied(growth_pct=10, months=4, plan_month=0).factor == 1.0


def test_retired_hosts_disappear() -> None:
    r = scored(retire_types=["b"], retire_hosts=["a3"])
    assert r.input.retired == {"b1", "b2", "a3"}
    assert r.usable_hosts == 2
    assert not {h for h in r.plan.placement.values()} & r.input.retired
    assert {h.host for h in r.hosts if h.state == "retired"} == {"b1", "b2", "a3"}
    assert all(
        m.reason == MigrationReason.MAINTENANCE for m in r.plan.migrations if m.source in r.input.retired
    )
    # a retired host draws nothing: energy is the two a-hosts' running power only
    loads = {h.host: h for h in r.hosts}
    watts = sum(100 + 150 * (0.6 * loads[h].vms / 16) for h in ("a1", "a2") if loads[h].vms)
    assert r.energy_kwh_per_day == pytest.approx(watts * 24 / 1000)


def test_added_hosts_appear_with_the_capacity_and_power_of_their_type() -> None:
    inp = applied(add_hosts=[{"type": "a", "count": 2}, {"type": "c", "cpu_cores": 96, "mem_mib": 1e6}])
    new = [h for h in inp.cluster.hosts if h.name.startswith("new-")]
    assert [(h.cpu_cores, h.mem_mib, h.labels["model"], h.state) for h in new] == [
        (16, 64 * GIB, "a", HostState.UP),
        (16, 64 * GIB, "a", HostState.UP),
        (96, 1e6, "c", HostState.UP),
    ]
    assert new[0].power == PowerModel(100, 250, 10) and new[2].power == PowerSettings().model()
    assert len({h.name for h in new}) == 3
    cluster, _, _ = world()
    assert usable_capacity(inp.cluster, settings(), inp.retired).hosts == len(cluster.hosts) + 3
    with pytest.raises(AdvisorError, match="scenario 's': add_hosts: .* no host of type 'c'"):
        applied(add_hosts=[{"type": "c"}])


def test_maintenance_evacuates() -> None:
    r = scored(maintenance=["a1", "b2"])
    assert not {"a1", "b2"} & set(r.plan.placement.values())
    moved = {m.vm for m in r.plan.migrations if m.reason == MigrationReason.MAINTENANCE}
    cluster, _, _ = world()
    assert moved == {v.name for v in cluster.vms if v.host in ("a1", "b2")}
    assert r.usable_hosts == 3 and r.migrations >= len(moved)


def test_unknown_hosts_and_types_are_named() -> None:
    with pytest.raises(AdvisorError, match="scenario 's': maintenance: cluster tiny has no host 'zz'"):
        applied(maintenance=["zz"])
    with pytest.raises(AdvisorError, match="scenario 's': retire_types: cluster tiny has no host type 'q'"):
        applied(retire_types=["q"])


def test_headroom_changes_capacity_and_the_plan_respects_it() -> None:
    cluster, _, _ = world()
    wide = applied()
    tight = applied(cpu_headroom=0.25)
    assert tight.settings.cpu_headroom == 0.25 and wide.settings.cpu_headroom == 0.8
    assert sum(usable_capacity(tight.cluster, tight.settings, tight.retired).cpu) == pytest.approx(
        0.25 * sum(h.cpu_cores for h in cluster.hosts)
    )
    r = scored(cpu_headroom=0.25)
    assert r.plan.after.peak_cpu_util <= 0.25 + 1e-9
    assert r.active_hosts > scored().active_hosts


def test_another_power_model_for_one_type() -> None:
    inp = applied(power={"idle_w": 50, "max_w": 60, "standby_w": 1, "types": ["b"]})
    by = inp.cluster.host_by_name
    assert by["b1"].power == PowerModel(50, 60, 1) and by["a1"].power == PowerModel(100, 250, 10)


def test_new_vms_are_placed_forecast_and_not_counted_as_migrations() -> None:
    r = scored(new_vms=[{"name": "web", "count": 3, "vcpus": 4, "mem_mib": 8192}])
    assert r.input.new_vms == {"web-1", "web-2", "web-3"}
    vms = r.input.cluster.vm_by_name
    assert all(vms[n].host in {h.name for h in r.input.cluster.hosts} for n in r.input.new_vms)
    assert r.input.forecast.vms["web-1"] == VMForecast(1.0, 2.0, 8192, 8192, 0.0)
    assert r.migrations == sum(1 for m in r.plan.migrations if m.vm not in r.input.new_vms)
    assert r.summary()["new_vms"] == 3


# --- the heatmap's hourly profiles -----------------------------------------------------------------------


def test_hourly_profiles_and_host_hours() -> None:
    day = datetime(2026, 1, 1, tzinfo=UTC)
    metrics = pd.DataFrame(
        {
            "vm": ["x", "x", "x", "y"],
            "ts": [day, day + timedelta(days=1), day + timedelta(hours=12), day + timedelta(hours=5)],
            "cpu_cores": [1.0, 3.0, 4.0, 2.0],
            "mem_mib": [1.0] * 4,
        }
    )
    profiles = hourly_profiles(metrics)
    assert profiles.loc["x", 0] == 2.0 and profiles.loc["x", 12] == 4.0
    assert profiles.loc["x", 7] == 3.0  # an hour never sampled takes the VM's mean over its hours
    assert (profiles.loc["y"] == 2.0).all()
    cluster = Cluster(
        "c",
        (Host("h", 4, 100), Host("g", 8, 100)),
        (VM("x", "h", 1, 1), VM("y", "h", 1, 1), VM("z", "g", 1, 1)),
    )
    forecast = Forecast(T0, 86400, "naive", "", {n: VMForecast(0.5, 1, 1, 1) for n in "xyz"})
    heat = host_hour_util(cluster, forecast, {"y": "g"}, profiles, 2.0, ["h", "g"])
    assert heat.shape == (2, 24)
    assert heat[0, 0] == pytest.approx(2.0 * 2 / 4)  # x, grown by 2, on 4 cores
    assert heat[1, 0] == pytest.approx((2.0 * 2 + 0.5) / 8)  # y moved there, z without history at its P50


# --- projection ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("caps", "total", "expected"),
    [
        ((10, 5), 0, 0),
        ((10, 5), 10, 1),
        ((5, 10), 12, 2),
        ((10, 5), 15, 2),
        ((10, 5), 16, 3),
        ((10, 5), 35, 4),
    ],
)
def test_hosts_needed_largest_first_then_more_of_the_largest(
    caps: tuple, total: float, expected: int
) -> None:
    assert hosts_needed(caps, total) == expected


def test_days_until_full_by_hand() -> None:
    # two hosts of 10 cores within headroom; P95 demand 10 cores doubling every month: it reaches 20 at
    # day 30.44 (still fits) and exceeds it on day 31
    capacity = Capacity(cpu=(10.0, 10.0), mem=(1e9, 1e9))
    demand = Demand(cpu_p50=5.0, cpu_p95=10.0, mem_mib=1.0)
    doubling = Scenario(name="d", growth_pct=100)
    assert days_until_full(capacity, demand, doubling) == 31
    assert days_until_full(capacity, Demand(5.0, 21.0, 1.0), doubling) == 0
    assert days_until_full(capacity, demand, Scenario(name="flat")) is None
    assert days_until_full(capacity, demand, Scenario(name="shrink", growth_pct=-5)) is None
    # memory can be the limit too: 1 GiB of 2 usable, doubling
    assert days_until_full(Capacity((1e9,), (2.0,)), Demand(0, 0, 1.0), doubling) == 31


def test_weekly_band_spans_the_window_and_p50_stays_below_p95() -> None:
    s = Scenario(name="g", growth_pct=5, months=6)
    capacity = Capacity(cpu=(10.0,) * 4, mem=(1e9,) * 4)
    weeks = weekly(capacity, Demand(6.0, 12.0, 1.0), s)
    assert len(weeks) == math.ceil(6 * DAYS_PER_MONTH / 7) + 1 and weeks[0].day == 0
    assert weeks[-1].day >= 6 * DAYS_PER_MONTH
    assert all(w.hosts_p50 <= w.hosts_p95 for w in weeks)
    assert [w.hosts_p95 for w in weeks] == sorted(w.hosts_p95 for w in weeks)
    assert (weeks[0].hosts_p50, weeks[0].hosts_p95) == (1, 2)


# --- the whole stage: exports, the page, the browser ------------------------------------------------------

SCENARIOS = """
[defaults]
time_limit_s = 1
months = 6

[[scenario]]
name = "today"
plan_month = 0

[[scenario]]
name = "growth <b>5%</b>"
growth_pct = 5

[[scenario]]
name = "retire b, add a"
retire_types = ["b"]
add_hosts = [{ type = "a", count = 1 }]
maintenance = ["a1"]
"""


@pytest.fixture(scope="module")
def stage(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    src = tmp_path_factory.mktemp("whatif")
    cluster, forecast, metrics = world()
    files.write_cluster(src / files.CLUSTER_FILE, cluster)
    files.write_forecast(src / files.FORECAST_FILE, forecast)
    write_metrics(metrics, src / files.METRICS_FILE)
    (src / "s.toml").write_text(SCENARIOS)
    cfg = Config.model_validate({"output": {"dir": str(src)}, "plan": {"workers": 1}})
    said: list[str] = []
    summary = run_whatif(cfg, src / "s.toml", src / "wi", said.append)
    assert any("scenario 3/3" in s for s in said)
    return src / "wi", summary


def test_summary_json_has_one_entry_per_scenario(stage: tuple[Path, dict]) -> None:
    out, summary = stage
    assert json.loads((out / "summary.json").read_text()) == summary
    entries = summary["scenarios"]
    assert [e["scenario"] for e in entries] == ["today", "growth <b>5%</b>", "retire b, add a"]
    for e in entries:
        assert set(e) >= SUMMARY_KEYS
        assert isinstance(e["active_hosts"], int) and 0 < e["active_hosts"] <= 6
        assert e["energy_kwh_per_day"] > 0 and 0 < e["peak_cpu_util"] <= 0.8 + 1e-9
        assert 0 < e["peak_mem_util"] <= 1.0 + 1e-9 and e["migrations"] >= 0
    today, growth, retire = entries
    assert today["days_until_full"] is None
    assert growth["demand_factor"] == pytest.approx(1.05**6, rel=1e-4) and isinstance(
        growth["days_until_full"], int
    )
    assert retire["usable_hosts"] == 3 and retire["migrations"] >= 4  # a1's VMs and the b hosts' VMs


def test_csv_exports(stage: tuple[Path, dict]) -> None:
    out, summary = stage
    rows = {
        name: list(csv.DictReader((out / name).open()))
        for name in ("scenarios.csv", "hosts_needed.csv", "host_utilisation.csv", "migrations.csv")
    }
    assert [r["scenario"] for r in rows["scenarios.csv"]] == [e["scenario"] for e in summary["scenarios"]]
    assert rows["scenarios.csv"][0]["days_until_full"] == ""
    weeks = [r for r in rows["hosts_needed.csv"] if r["scenario"] == "today"]
    assert len(weeks) == math.ceil(6 * DAYS_PER_MONTH / 7) + 1
    retire = [r for r in rows["host_utilisation.csv"] if r["scenario"] == "retire b, add a"]
    assert {r["host"]: r["state"] for r in retire}["b1"] == "retired" and len(retire) == 6
    moves = [r for r in rows["migrations.csv"] if r["scenario"] == "retire b, add a"]
    assert {r["source"] for r in moves if r["reason"] == "maintenance"} == {"a1", "b1", "b2"}


def test_html_is_self_contained_and_escaped(stage: tuple[Path, dict]) -> None:
    html = (stage[0] / "report.html").read_text()
    srcs = re.findall(r'(?:src|href)="([^"]*)"', html)
    assert len(re.findall(r'<img class="plot" src="data:image/png;base64,', html)) == 3
    assert all(s.startswith("data:image/png;base64,") for s in srcs)
    assert not re.search(r"https?://|<link|<script|@import|url\(", html)
    assert "growth &lt;b&gt;5%&lt;/b&gt;" in html and "<b>5%</b>" not in html
    for plot in ("plot-hosts-needed", "plot-heatmap", "plot-energy"):
        assert f'id="{plot}"' in html


def test_run_whatif_names_a_missing_input(tmp_path: Path) -> None:
    (tmp_path / "s.toml").write_text(SCENARIOS)
    cfg = Config.model_validate({"output": {"dir": str(tmp_path)}})
    with pytest.raises(AdvisorError, match=r"cluster.json: no such file \(run `advisor collect` first\)"):
        run_whatif(cfg, tmp_path / "s.toml", tmp_path / "wi")


CHECK_HEAD = (
    "<script>window.__errors=[];window.addEventListener('error',function(e){window.__errors.push("
    "String(e.message||(e.target&&(e.target.src||e.target.href))))},true);</script>"
)
CHECK_TAIL = """<script>window.addEventListener('load',function(){
var imgs=[].slice.call(document.querySelectorAll('figure img'));
var ext=performance.getEntriesByType('resource').map(function(e){return e.name})
  .filter(function(n){return n.indexOf('data:')!==0});
var out={plots:imgs.map(function(i){
  return [i.closest('figure').id,i.complete,i.naturalWidth,i.naturalHeight]}),
  external:ext,errors:window.__errors};
var pre=document.createElement('pre');pre.id='whatif-check';pre.textContent=JSON.stringify(out);
document.body.appendChild(pre);});</script>"""


def chromium(tmp: Path, page: Path, *args: str) -> subprocess.CompletedProcess[str]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: install the Debian package `chromium` to run the browser test")
    return subprocess.run(
        [
            str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--user-data-dir={tmp / 'profile'}", "--enable-logging=stderr", "--v=0", *args,
            page.resolve().as_uri(),
        ],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def browser_check(tmp: Path, html: str) -> tuple[dict, list[str]]:
    """The page as Chromium sees it: each figure's image (loaded, natural size), resources fetched from
    anywhere but a data URI, error events; and the console lines Chromium logged."""
    page = tmp / "check.html"
    page.write_text(
        html.replace("<head>", "<head>" + CHECK_HEAD, 1).replace("</body>", CHECK_TAIL + "</body>")
    )
    run = chromium(tmp, page, "--dump-dom")
    assert run.returncode == 0, run.stderr[-2000:]
    found = re.search(r'<pre id="whatif-check">([^<]*)</pre>', run.stdout)
    assert found, "the check script did not run"
    return json.loads(found.group(1).replace("&amp;", "&")), [
        line for line in run.stderr.splitlines() if ":CONSOLE" in line
    ]


def test_page_renders_in_chromium_without_errors(stage: tuple[Path, dict], tmp_path: Path) -> None:
    report = stage[0] / "report.html"
    seen, console = browser_check(tmp_path, report.read_text())
    assert console == [] and seen["errors"] == [] and seen["external"] == []
    assert [p[0] for p in seen["plots"]] == ["plot-hosts-needed", "plot-heatmap", "plot-energy"]
    assert all(done and w > 300 and h > 100 for _, done, w, h in seen["plots"])
    shot = tmp_path / "shot.png"
    run = chromium(tmp_path, report, f"--screenshot={shot}", "--window-size=1280,2400")
    assert run.returncode == 0 and shot.exists(), run.stderr[-2000:]
    pixels = imread(shot)
    assert pixels.shape[:2] == (2400, 1280) and float(np.std(pixels[..., :3])) > 0.05
    if os.environ.get("ADVISOR_ARTEFACTS"):
        artefacts = Path(__file__).parent.parent / "out"
        artefacts.mkdir(exist_ok=True)
        shutil.copy(shot, artefacts / "whatif-screenshot.png")


def test_the_browser_check_catches_a_broken_plot(tmp_path: Path) -> None:
    html = (
        '<html><head></head><body><figure id="plot-x"><img src="http://127.0.0.1:9/x.png"></figure>'
        '<script>console.error("boom")</script></body></html>'
    )
    seen, console = browser_check(tmp_path, html)
    assert seen["plots"] == [["plot-x", True, 0, 0]]
    assert seen["errors"] == ["http://127.0.0.1:9/x.png"] and seen["external"] == ["http://127.0.0.1:9/x.png"]
    assert len(console) == 1 and '"boom"' in console[0]
