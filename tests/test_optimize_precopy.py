"""The analytic pre-copy model: rounds shrink geometrically, budgets are honoured, hopeless guests are
flagged."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from advisor.errors import InputError
from advisor.migration import predict_precopy


def test_an_idle_guest_is_copied_once_with_no_downtime() -> None:
    est = predict_precopy(8192, 0.0, 1000, 300)
    assert est.converges and est.iterations == 1
    assert est.transferred_mib == 8192 and est.downtime_ms == 0
    assert est.total_time_s == pytest.approx(8.192)


def test_rounds_halve_until_the_remainder_fits_the_downtime_budget() -> None:
    # 8192 -> 4096 -> 2048 -> 1024 -> 512 live rounds leave 256 MiB: 256 ms at 1000 MiB/s <= 300 ms
    est = predict_precopy(8192, 500.0, 1000, 300)
    assert est.converges and est.iterations == 5
    assert est.transferred_mib == pytest.approx(8192 + 4096 + 2048 + 1024 + 512 + 256)
    assert est.downtime_ms == pytest.approx(256)
    assert est.total_time_s == pytest.approx(16.128)


@pytest.mark.parametrize("mem", [512.0, 4096.0])
def test_dirtying_as_fast_as_the_link_never_converges(mem: float) -> None:
    est = predict_precopy(mem, 1000.0, 1000, 300, max_iterations=7)
    assert not est.converges and est.iterations == 7
    assert est.transferred_mib == pytest.approx(8 * mem)  # 7 full rounds and a forced stop-and-copy


def test_a_guest_whose_memory_fits_the_budget_stops_after_one_round_however_fast_it_dirties() -> None:
    # QEMU compares what is left with the budget, not the dirty rate with the link
    est = predict_precopy(64, 5000.0, 1000, 300)
    assert est.converges and est.iterations == 1
    assert est.downtime_ms == pytest.approx(64)


def test_hitting_the_round_cap_reports_the_overrun_downtime() -> None:
    est = predict_precopy(16384, 900.0, 1000, 10, max_iterations=5)
    assert not est.converges and est.iterations == 5
    assert est.downtime_ms > 10


@pytest.mark.parametrize(
    ("args", "what"), [((1024, 1, 0, 300), "bandwidth"), ((1024, -1, 100, 300), "dirty")]
)
def test_bad_inputs_are_named(args: tuple, what: str) -> None:
    with pytest.raises(InputError, match=what):
        predict_precopy(*args)


@given(
    mem=st.floats(1, 65536),
    dirty=st.floats(0, 2000),
    more=st.floats(0, 500),
    bw=st.floats(100, 5000),
    budget=st.floats(1, 1000),
)
def test_estimates_are_consistent_and_grow_with_the_dirty_rate(
    mem: float, dirty: float, more: float, bw: float, budget: float
) -> None:
    est = predict_precopy(mem, dirty, bw, budget)
    worse = predict_precopy(mem, dirty + more, bw, budget)
    assert est.transferred_mib >= mem - 1e-6
    assert est.total_time_s == pytest.approx(est.transferred_mib / bw)
    if est.converges:
        assert est.downtime_ms <= budget + 1e-6
    assert worse.total_time_s >= est.total_time_s - 1e-9
    assert worse.iterations >= est.iterations
    assert est.converges or not worse.converges
