"""CloudSim PlanetLab benchmark: every policy on the given days in the cloudsim setup, beside CloudSim 3.0.3
(or in the realistic setup, alone: `--setup realistic`).

    .venv/bin/python bench/planetlab.py ../shared/data/planetlab/2011*.csv.gz [--out docs/planetlab.md]

Reads CLOUDSIM_RESULTS.md next to each day file when there is one, and prints (or writes) a Markdown table:
our energy, migrations and SLAV with the deviation from CloudSim's, and the issue's targets for the
`advisor` policy (ESV at most half the best CloudSim ESV, energy at most the lowest baseline's, migrations
at most 10% of iqr-mmt's). Each run's wall and CPU seconds go to stderr: on a shared machine the wall
time is the load's as much as the policy's.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

from advisor.config import SimulateSettings
from advisor.simulate.engine import Result
from advisor.simulate.report import write_report
from advisor.simulate.run import POLICIES, simulate
from advisor.simulate.trace import load_day

CLOUDSIM_NAMES = {
    "thr-mmt": "thr_mmt_0.8",
    "iqr-mmt": "iqr_mmt_1.5",
    "mad-mmt": "mad_mmt_2.5",
    "lr-mmt": "lr_mmt_1.2",
}


def cloudsim_rows(folder: Path) -> dict[tuple[str, str], dict[str, float]]:
    """(day, policy) -> energy, migrations, slav, esv from CLOUDSIM_RESULTS.md."""
    path = folder / "CLOUDSIM_RESULTS.md"
    rows: dict[tuple[str, str], dict[str, float]] = {}
    if not path.exists():
        return rows
    for line in path.read_text().splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 9 and re.fullmatch(r"\d{8}", cells[0]):
            rows[(cells[0], cells[1])] = {
                "energy": float(cells[3]),
                "migrations": float(cells[4]),
                "slav": float(cells[7]) * 1e-5,
                "esv": float(cells[8]) * 1e-3,
            }
    return rows


def _dev(ours: float, theirs: float | None) -> str:
    return "" if not theirs else f" ({100 * (ours - theirs) / theirs:+.1f}%)"


def table(results: list[Result], ref: dict[tuple[str, str], dict[str, float]]) -> str:
    lines = [
        "| day | policy | energy kWh | migrations | SLATAH % | PDM % | SLAV x1e-5 | ESV x1e-3 | wall s |"
        " CloudSim energy / migrations / SLAV x1e-5 |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        c = ref.get((r.day, CLOUDSIM_NAMES.get(r.policy, "")))
        ce, cm, cs = (c["energy"], c["migrations"], c["slav"]) if c else (None, None, None)
        lines.append(
            f"| {r.day} | {r.policy} | {r.energy_kwh:.2f}{_dev(r.energy_kwh, ce)}"
            f" | {r.migrations}{_dev(r.migrations, cm)}"
            f" | {100 * r.slatah:.2f} | {100 * r.pdm:.4f} | {1e5 * r.slav:.2f}{_dev(r.slav, cs)}"
            f" | {1e3 * r.esv:.2f} | {r.wall_s:.1f} |"
            + (f" {c['energy']:.2f} / {c['migrations']:.0f} / {1e5 * c['slav']:.2f} |" if c else " |")
        )
    return "\n".join(lines)


def targets(results: list[Result], ref: dict[tuple[str, str], dict[str, float]]) -> str:
    """The issue's targets for the advisor policy, day by day, against CloudSim's own numbers."""
    lines = [
        "| day | advisor ESV x1e-3 vs half best CloudSim | energy vs lowest baseline"
        " | migrations vs 10% iqr | all |",
        "|---|---|---|---|---|",
    ]
    for r in (r for r in results if r.policy == "advisor"):
        base = [v for (d, p), v in ref.items() if d == r.day and p in CLOUDSIM_NAMES.values()]
        iqr = ref.get((r.day, "iqr_mmt_1.5"))
        if not base or not iqr:
            continue
        esv_cap = min(v["esv"] for v in base) / 2
        e_cap = min(v["energy"] for v in base)
        m_cap = 0.1 * iqr["migrations"]
        ok = (r.esv <= esv_cap, r.energy_kwh <= e_cap, r.migrations <= m_cap)
        mark = ["met" if x else "MISSED" for x in ok]
        lines.append(
            f"| {r.day} | {1e3 * r.esv:.3f} <= {1e3 * esv_cap:.2f}: {mark[0]}"
            f" | {r.energy_kwh:.1f} <= {e_cap:.1f}: {mark[1]} | {r.migrations} <= {m_cap:.0f}: {mark[2]}"
            f" | {'yes' if all(ok) else 'no'} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("days", nargs="+", help="PlanetLab day files (vm,step,cpu)")
    ap.add_argument("--policies", default=",".join(POLICIES), help="comma-separated subset")
    ap.add_argument("--setup", choices=("cloudsim", "realistic"), default="cloudsim")
    ap.add_argument("--out", help="write the Markdown here instead of stdout")
    ap.add_argument("--html", help="directory for one HTML page of per-step plots per day")
    args = ap.parse_args(argv)
    settings = SimulateSettings(setup=args.setup)
    results: list[Result] = []
    ref: dict[tuple[str, str], dict[str, float]] = {}
    for path in args.days:
        if args.setup == "cloudsim":  # CloudSim's figures compare with this setup only
            ref.update(cloudsim_rows(Path(path).parent))
        day = load_day(path)
        for policy in args.policies.split(","):
            cpu = time.process_time()
            r = simulate(day, settings, policy)
            print(
                f"{r.day} {policy}: {r.energy_kwh:.2f} kWh, {r.migrations} migrations, {r.wall_s:.1f} s wall,"
                f" {time.process_time() - cpu:.1f} s CPU",
                file=sys.stderr,
            )
            results.append(r)
        if args.html:
            write_report([r for r in results if r.day == day.name], Path(args.html) / f"{day.name}.html")
    text = table(results, ref) + "\n\n" + targets(results, ref) + "\n"
    if args.out:
        Path(args.out).write_text(text)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
