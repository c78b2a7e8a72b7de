"""The HTML report: complete, self-contained, escaped, and faithful to the plan it shows."""

from __future__ import annotations

import base64
import random
from collections import defaultdict
from dataclasses import replace
from datetime import UTC, datetime
from html.parser import HTMLParser

import numpy as np
import pytest
from hypothesis import given, settings
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
    VMForecast,
)
from advisor.errors import InputError
from advisor.report import render_report, write_report
from advisor.report.figures import host_loads
from advisor.report.plots import MAX_LABELLED_HOSTS, utilisation_figure

T0 = datetime(2025, 3, 4, 5, 6, tzinfo=UTC)
SCRIPT_VM = "<script>alert('x')</script>"
VOID = {"img", "meta", "br", "link", "input", "hr", "source"}


class Page(HTMLParser):
    """Parses a page strictly (every element closed in order) and keeps what the tests look at:
    the tags, the text under each id, and the body rows of each table by id."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[tuple[str, str | None]] = []
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: dict[str, str] = defaultdict(str)
        self.rows: dict[str, list[list[str]]] = defaultdict(list)
        self.feed(html)
        self.close()
        assert not self.stack, f"unclosed elements {self.stack}"

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.tags.append((tag, a))
        if tag in VOID:
            return
        self.stack.append((tag, a.get("id")))
        table = self._innermost("table")
        if table and any(t == "tbody" for t, _ in self.stack):
            if tag == "tr":
                self.rows[table].append([])
            elif tag == "td":
                self.rows[table][-1].append("")

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID:
            return
        assert self.stack and self.stack[-1][0] == tag, f"</{tag}> closes {self.stack[-1:]}"
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        for _, ident in self.stack:
            if ident:
                self.text[ident] += data
        table = self._innermost("table")
        if table and self.stack[-1][0] != "tr" and any(t == "td" for t, _ in self.stack):
            self.rows[table][-1][-1] += data

    def _innermost(self, tag: str) -> str | None:
        for t, ident in reversed(self.stack):
            if t == tag:
                return ident
        return None

    @property
    def ids(self) -> set[str]:
        return {str(a["id"]) for _, a in self.tags if a.get("id")}

    def row(self, table: str, first_cell: str) -> list[str]:
        matches = [r for r in self.rows[table] if r and r[0].strip() == first_cell]
        assert len(matches) == 1, f"{first_cell!r} in {self.rows[table]}"
        return [c.strip() for c in matches[0]]


def small_instance(vm_name: str = SCRIPT_VM, converges: bool = False) -> tuple[Cluster, Forecast, Plan]:
    """Four hosts (h4 in maintenance), five VMs; the plan empties h4 and h3 in two waves."""
    hosts = tuple(Host(f"h{i}", 16, 65536) for i in (1, 2, 3)) + (
        Host("h4", 16, 65536, state=HostState.MAINTENANCE),
    )
    vms = (
        VM("web-1", "h1", 4, 8192),
        VM("db-1", "h1", 8, 32768),
        VM(vm_name, "h2", 2, 4096),
        VM("cache-1", "h3", 4, 16384),
        VM("batch-1", "h4", 4, 8192),
    )
    cluster = Cluster("prod-a", hosts, vms)
    demand = {"web-1": 2.0, "db-1": 5.0, vm_name: 1.0, "cache-1": 3.0, "batch-1": 2.5}
    forecast = Forecast(
        T0,
        86400,
        "quantile_gbm",
        cluster.fingerprint(),
        {n: VMForecast(c * 0.6, c, 1000.0, 1200.0, 5.0) for n, c in demand.items()},
    )
    migrations = (
        Migration(vm_name, "h2", "h1", MigrationReason.CONSOLIDATE, 2, 4.25, 120.0, 4300.0, converges),
        Migration("batch-1", "h4", "h2", MigrationReason.MAINTENANCE, 1, 9.5, 80.0, 8400.0, True),
        Migration("cache-1", "h3", "h2", MigrationReason.CONSOLIDATE, 1, 17.75, 250.0, 16900.0, True),
    )
    placement = {**cluster.placement, vm_name: "h1", "batch-1": "h2", "cache-1": "h2"}
    plan = Plan(
        cluster="prod-a",
        cluster_fingerprint=cluster.fingerprint(),
        forecast_fingerprint=forecast.fingerprint(),
        created_at=T0,
        goal="consolidate",
        status=PlanStatus.OPTIMAL,
        solver="cp-sat",
        placement=placement,
        migrations=migrations,
        standby=("h3",),
        before=PlanFigures(3, 17.256, 0.4375, 0.625, 0),
        after=PlanFigures(2, 12.5, 0.5, 0.6875, 0),
        bounds=Bounds(1, 2, 11.875),
        solve_s=1.37,
    )
    return cluster, forecast, plan


def infeasible(plan: Plan) -> Plan:
    return replace(
        plan,
        status=PlanStatus.INFEASIBLE,
        placement={},
        migrations=(),
        standby=(),
        after=plan.before,
        blocking_vms=("db-1", "web-1"),
        message="anti-affinity group [db-1, web-1] needs 3 hosts but 2 are usable",
    )


@pytest.fixture(scope="module")
def small_page() -> tuple[str, Page, Plan]:
    cluster, forecast, plan = small_instance()
    dry = {"ok": True, "states_checked": 5, "violations": [], "final_placement": dict(plan.placement)}
    html = render_report(cluster, forecast, plan, dry_run=dry)
    return html, Page(html), plan


def test_page_parses_and_has_every_section(small_page: tuple[str, Page, Plan]) -> None:
    html, page, _ = small_page
    assert html.startswith("<!DOCTYPE html>")
    for section in (
        "header",
        "summary",
        "plots",
        "migrations",
        "standby",
        "dry-run",
        "plot-cpu",
        "plot-mem",
        "plot-totals",
        "savings",
        "not-converging",
    ):
        assert section in page.ids, section
    assert "infeasible" not in page.ids
    assert "stale" not in page.ids
    assert "prod-a" in page.text["header"]
    assert "2025-03-04 05:06 UTC" in page.text["header"]
    assert "cp-sat" in page.text["header"] and "1.4 s" in page.text["header"]


def test_summary_table_shows_the_plan_figures(small_page: tuple[str, Page, Plan]) -> None:
    _, page, plan = small_page
    assert page.row("summary-table", "Active hosts")[1:] == ["3", "2", "2"]
    assert page.row("summary-table", "Energy (kWh/day)")[1:] == ["17.3", "12.5", "11.9"]
    assert page.row("summary-table", "Peak CPU utilisation (P95)")[1:3] == ["43.8 %", "50.0 %"]
    assert page.row("summary-table", "Peak memory utilisation")[1:3] == ["62.5 %", "68.8 %"]
    assert page.row("summary-table", "Migrations")[2] == "3"
    assert page.row("summary-table", "Memory moved (GiB)")[2] == "28.0"  # 4 + 8 + 16 GiB
    assert page.row("summary-table", "Predicted transfer (GiB)")[2] == f"{(4300 + 8400 + 16900) / 1024:.1f}"
    assert page.row("summary-table", "Waves")[2] == "2"
    saved = " ".join(page.text["savings"].split())
    assert "4.8 kWh/day" in saved and "(27.6 %)" in saved
    assert f"{(17.256 - 12.5) * 365:,.1f} kWh/year" in saved


def test_migration_rows_sorted_by_wave_with_names_and_flags(small_page: tuple[str, Page, Plan]) -> None:
    html, page, _ = small_page
    rows = page.rows["migration-table"]
    assert [(r[0], r[1]) for r in rows] == [("1", "batch-1"), ("1", "cache-1"), ("2", SCRIPT_VM)]
    assert [" ".join(c.split()) for c in rows[0][2:]] == [
        "h4 → h2",
        "maintenance",
        "8.0",
        "8.2",
        "9.5",
        "80",
        "yes",
    ]
    assert rows[2][-1].strip() == "NO"
    assert html.count('class="bad"') == 1
    assert page.row("wave-table", "1")[1:] == ["2", "24.0", "17.8", "0"]
    assert page.row("wave-table", "2")[1:] == ["1", "4.0", "4.2", "1"]


def test_plots_are_embedded_png_images(small_page: tuple[str, Page, Plan]) -> None:
    _, page, _ = small_page
    images = [a for t, a in page.tags if t == "img"]
    assert len(images) == 3
    for img in images:
        src = str(img["src"])
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
        assert img["alt"]


def test_page_is_self_contained(small_page: tuple[str, Page, Plan]) -> None:
    html, page, _ = small_page
    assert "http://" not in html and "https://" not in html
    assert not [t for t, _ in page.tags if t in ("link", "script", "iframe", "object")]
    for _, attrs in page.tags:
        for key in ("src", "href"):
            if key in attrs:
                assert str(attrs[key]).startswith(("data:", "#")), attrs


@pytest.mark.parametrize("name", [SCRIPT_VM, 'vm"&<b>bold</b>', "vm</td></tr></table>"])
def test_user_strings_are_escaped(name: str) -> None:
    cluster, forecast, plan = small_instance(vm_name=name)
    html = render_report(cluster, forecast, plan)
    page = Page(html)  # a name that broke out of its cell would unbalance the tags
    assert "<script" not in html and "<b>bold" not in html
    assert [r[1] for r in page.rows["migration-table"]][-1] == name


def test_dry_run_violations_are_listed() -> None:
    cluster, forecast, plan = small_instance()
    dry = {"ok": False, "states_checked": 4, "violations": ["wave 2: host h1 over CPU headroom (VM <x>)"]}
    page = Page(render_report(cluster, forecast, plan, dry_run=dry))
    text = " ".join(page.text["dry-run"].split())
    assert "failed" in text and "4 intermediate and final states checked" in text
    assert "wave 2: host h1 over CPU headroom (VM <x>)" in text
    assert "1 violation." in text


def test_no_dry_run_section_without_a_result() -> None:
    assert "dry-run" not in Page(render_report(*small_instance())).ids


@pytest.mark.parametrize(
    ("dry", "key"),
    [
        ({"ok": True, "violations": []}, "states_checked"),
        ({"ok": "yes", "states_checked": 1, "violations": []}, "ok"),
        ({"ok": True, "states_checked": 1, "violations": "none"}, "violations"),
    ],
)
def test_a_malformed_dry_run_result_is_named(dry: dict, key: str) -> None:
    with pytest.raises(InputError, match=f"dry-run result: .*{key}"):
        render_report(*small_instance(), dry_run=dry)


def test_infeasible_plan_shows_message_and_blocking_vms() -> None:
    cluster, forecast, plan = small_instance()
    page = Page(render_report(cluster, forecast, infeasible(plan)))
    box = " ".join(page.text["infeasible"].split())
    assert "anti-affinity group [db-1, web-1] needs 3 hosts" in box
    assert "Blocking VMs (2)" in box and "db-1" in box and "web-1" in box
    assert "no-migrations" in page.ids and "migration-table" not in page.ids
    assert "No host goes to standby." in page.text["standby"]


def test_a_plan_without_moves_that_costs_energy_says_so() -> None:
    cluster, forecast, plan = small_instance()
    plan = replace(
        plan,
        goal="balance",
        placement=cluster.placement,
        migrations=(),
        standby=(),
        after=replace(plan.after, energy_kwh_per_day=20.0),
    )
    page = Page(render_report(cluster, forecast, plan))
    text = " ".join(page.text["savings"].split())
    assert text == "No energy saved: the plan uses 2.7 kWh/day more (15.9 %), 1,001.6 kWh/year."
    assert "no-migrations" in page.ids and "not-converging" not in page.ids
    assert page.row("summary-table", "Waves")[2] == "0"


def test_stale_plan_is_flagged() -> None:
    cluster, forecast, plan = small_instance()
    page = Page(render_report(cluster, forecast, replace(plan, forecast_fingerprint="0" * 16)))
    assert "another forecast state" in " ".join(page.text["stale"].split())


def test_plan_for_another_cluster_is_refused() -> None:
    cluster, forecast, plan = small_instance()
    with pytest.raises(InputError, match="host 'h9'"):
        render_report(cluster, forecast, replace(plan, placement={**plan.placement, "web-1": "h9"}))
    with pytest.raises(InputError, match="VM 'ghost'"):
        render_report(cluster, forecast, replace(plan, placement={**plan.placement, "ghost": "h1"}))
    ghost = Migration("ghost", "h1", "h2", MigrationReason.BALANCE, 1, 1.0, 1.0, 1.0, True)
    with pytest.raises(InputError, match="VM 'ghost'"):
        render_report(cluster, forecast, replace(plan, migrations=(*plan.migrations, ghost)))
    short = replace(forecast, vms={k: v for k, v in forecast.vms.items() if k != "db-1"})
    with pytest.raises(InputError, match="db-1"):
        render_report(cluster, short, plan)


def test_host_loads_before_and_after() -> None:
    cluster, forecast, plan = small_instance()
    loads = {x.name: x for x in host_loads(cluster, forecast, plan)}
    assert loads["h1"].cpu_before == pytest.approx(7.0 / 16)
    assert loads["h1"].cpu_after == pytest.approx(8.0 / 16)
    assert loads["h2"].mem_after == pytest.approx((8192 + 16384) / 65536)
    assert loads["h3"].standby_after and not loads["h3"].standby_before
    assert loads["h4"].maintenance and loads["h4"].vms_after == 0 and not loads["h4"].standby_after
    assert [x.name for x in host_loads(cluster, forecast, plan)] == ["h1", "h2", "h3", "h4"]


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_host_loads_conserve_demand(data: st.DataObject) -> None:
    n_hosts = data.draw(st.integers(1, 6))
    hosts = tuple(Host(f"h{i}", data.draw(st.sampled_from([8, 16, 48])), 65536) for i in range(n_hosts))
    names = [h.name for h in hosts]
    n_vms = data.draw(st.integers(0, 12))
    vms = tuple(
        VM(f"v{i}", data.draw(st.sampled_from(names)), 2, data.draw(st.sampled_from([1024, 4096])))
        for i in range(n_vms)
    )
    cluster = Cluster("c", hosts, vms)
    cpu = {v.name: data.draw(st.floats(0, 8)) for v in vms}
    forecast = Forecast(T0, 3600, "naive", "", {n: VMForecast(c, c, 1, 1) for n, c in cpu.items()})
    after = {v.name: data.draw(st.sampled_from(names)) for v in vms}
    _, _, template = small_instance()
    plan = replace(template, placement=after, migrations=(), standby=tuple(names))
    loads = host_loads(cluster, forecast, plan)
    cores = {h.name: h.cpu_cores for h in hosts}
    total_cpu, total_mem = sum(cpu.values()), sum(v.mem_mib for v in vms)
    for which in ("before", "after"):
        assert sum(getattr(x, f"cpu_{which}") * cores[x.name] for x in loads) == pytest.approx(total_cpu)
        assert sum(getattr(x, f"mem_{which}") * 65536 for x in loads) == pytest.approx(total_mem)
    assert all(x.vms_after == 0 for x in loads if x.standby_after)
    assert [x.cpu_after for x in loads] == sorted((x.cpu_after for x in loads), reverse=True)


def large_instance(n_hosts: int = 200, n_vms: int = 2000, seed: int = 1) -> tuple[Cluster, Forecast, Plan]:
    rng = random.Random(seed)
    hosts = tuple(
        Host(f"host-{i:03d}", 64, 524288, state=HostState.MAINTENANCE if i % 50 == 7 else HostState.UP)
        for i in range(n_hosts)
    )
    usable = [h.name for h in hosts if h.state == HostState.UP]
    vms = tuple(
        VM(f"vm-{i:04d}", rng.choice([h.name for h in hosts]), 4, rng.choice([4096, 8192, 16384]))
        for i in range(n_vms)
    )
    cluster = Cluster("big", hosts, vms)
    forecast = Forecast(
        T0,
        86400,
        "naive",
        cluster.fingerprint(),
        {v.name: VMForecast(1.0, rng.uniform(0.2, 4.0), 1, 1, 2.0) for v in vms},
    )
    targets = usable[: int(len(usable) * 0.7)]
    placement = {
        v.name: rng.choice(targets) if rng.random() < 0.6 or v.host not in usable else v.host for v in vms
    }
    migrations = [
        Migration(
            v.name,
            v.host,
            placement[v.name],
            MigrationReason.CONSOLIDATE,
            rng.randint(1, 8),
            10.0,
            100.0,
            v.mem_mib,
            rng.random() > 0.01,
        )
        for v in vms
        if placement[v.name] != v.host
    ]
    rng.shuffle(migrations)
    used = set(placement.values())
    _, _, template = small_instance()
    plan = replace(
        template,
        cluster="big",
        cluster_fingerprint=cluster.fingerprint(),
        forecast_fingerprint=forecast.fingerprint(),
        placement=placement,
        migrations=tuple(migrations),
        standby=tuple(h for h in usable if h not in used),
    )
    return cluster, forecast, plan


def test_large_cluster_renders_every_migration_in_wave_order(tmp_path) -> None:
    cluster, forecast, plan = large_instance()
    out = tmp_path / "sub" / "report.html"
    write_report(out, cluster, forecast, plan)
    assert [p.name for p in out.parent.iterdir()] == ["report.html"]
    page = Page(out.read_text())
    rows = page.rows["migration-table"]
    assert len(rows) == len(plan.migrations) > 1000
    waves = [int(r[0]) for r in rows]
    assert waves == sorted(waves)
    assert {r[1] for r in rows} == {m.vm for m in plan.migrations}
    assert len([t for t, _ in page.tags if t == "img"]) == 3


@pytest.mark.parametrize("n_hosts", [10, MAX_LABELLED_HOSTS, MAX_LABELLED_HOSTS + 1, 200])
def test_host_names_label_the_axis_only_while_readable(n_hosts: int) -> None:
    cluster, forecast, plan = large_instance(n_hosts=n_hosts, n_vms=5 * n_hosts)
    loads = host_loads(cluster, forecast, plan)
    fig = utilisation_figure(loads, "cpu", 0.8)
    ax_after = fig.axes[1]
    labels = [t.get_text() for t in ax_after.get_xticklabels()]
    if n_hosts <= MAX_LABELLED_HOSTS:
        assert labels == [x.name for x in loads]
    else:
        assert labels == []
    headroom_lines = [line for ax in fig.axes[:2] for line in ax.get_lines()]
    assert len(headroom_lines) == 2
    assert all(np.allclose(np.asarray(line.get_ydata()), 0.8) for line in headroom_lines)
