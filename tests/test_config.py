"""Configuration: defaults work, mistakes name the key, the example file documents every key."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from advisor.config import Config, load_config, parse_config
from advisor.errors import AdvisorError

EXAMPLE = Path(__file__).parent.parent / "examples" / "advisor.toml"


def test_defaults_are_valid() -> None:
    cfg = load_config(None)
    assert cfg.plan.cpu_headroom == 0.8 and cfg.collect.source == "synthetic"
    assert cfg.power.model().watts(0) == cfg.power.idle_w


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"plan": {"cpu_headroom": 1.5}}, "plan.cpu_headroom: Input should be less than or equal to 1"),
        ({"plan": {"headroom": 0.5}}, "plan.headroom: unknown key"),
        ({"collect": {"source": "ftp"}}, "collect.source: Input should be"),
        ({"collect": {"synthetic": {"hosts": -3}}}, "collect.synthetic.hosts"),
        ({"power": {"idle_w": 300, "max_w": 100}}, "power: Value error, max_w must be at least idle_w"),
        ({"nonsense": {}}, "nonsense: unknown key"),
        ({"forecast": {"ahead_horizons": ["2h"]}}, "forecast.ahead_horizons.0: Input should be '5min'"),
        ({"forecast": {"ahead_jobs": 0}}, "forecast: Value error, ahead_jobs must be -1"),
    ],
)
def test_bad_values_name_the_key(data: dict, message: str) -> None:
    with pytest.raises(AdvisorError, match=message.replace("(", r"\(")):
        parse_config(data, "x.toml")


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(AdvisorError, match="no such configuration file"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[plan\n")
    with pytest.raises(AdvisorError, match=f"{bad}: not valid TOML"):
        load_config(bad)


def _keys(data: dict, prefix: str = "") -> set[str]:
    out = set()
    for k, v in data.items():
        out |= _keys(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}"}
    return out


def test_example_config_documents_every_key_with_its_default() -> None:
    example = tomllib.loads(EXAMPLE.read_text())
    assert _keys(example) == _keys(Config().model_dump())
    assert load_config(EXAMPLE) == Config()
