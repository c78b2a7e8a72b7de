"""The learned correction of the analytic pre-copy model, fitted on measured migrations.

The analytic model knows the mechanism but not the machine: the memory a guest has really touched
(untouched pages cost nothing), a fixed cost per migration (setup, final sync, device state), how much
CPU the guest's dirtying needs (auto-converge's throttle does nothing until it leaves less than that), how
small xbzrle's deltas are and how fast it encodes, how fast the stop-and-copy runs (QEMU lifts the cap)
and what it costs beyond the pages (device state, the destination's start).
The correction learns in two steps:
1. calibration (`Calibration`, `calibrate`): those constants, with QEMU's switch-over inside the last
   round and its xbzrle cache filled in round 2, fitted by least absolute log error in stages: overhead
   and touched memory on the plain migrations' total time, the dirtying's CPU share on auto-converge ones,
   xbzrle's ratio and rate on xbzrle ones, the stop-and-copy's rate and fixed cost on the downtimes (an
   aborted migration counts only when predicted to finish before its abort); twice, so the time
   constants see the stop-and-copy's;
2. what is left: a logistic classifier of convergence (finished before `abort_deadline_s`) on the
   calibrated margin, log(abort deadline / calibrated time), and the options; gradient boosting of the
   bytes as log(measured / calibrated). Total time and downtime are the calibrated model's: boosting
   their residuals made them worse in grouped cross-validation on the 200 committed migrations (time P90
   error 0.31 against 0.24, folds by guest; `bench/migration_model.py --cv`), and boosted trees
   classified convergence worse than the logistic model (0.96 against 0.985).
Its scikit-learn API (`fit(X, y)`, `predict(X)`) takes bench/migrations.py's columns: X the inputs, y the
outcomes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from sklearn.base import BaseEstimator
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

from advisor.errors import InputError
from advisor.migration.measured import INPUT_COLUMNS, abort_deadline_s
from advisor.migration.precopy import Calibration, analytic_frame

MIN_CALIBRATION_ROWS = 5  # fewer rows showing a constant: it keeps its default

FEATURES = (
    "log_mem",
    "ws_share",
    "log_dirty",
    "log_bandwidth",
    "log_downtime",
    "auto_converge",
    "xbzrle",
    "dirty_over_bw",
    "budget_over_ws",
    "an_log_time",
    "an_converges",
    "cal_log_time",
    "cal_converges",
    "cal_log_mib",
    "cal_iterations",
    "cal_margin",
)
CONVERGE_FEATURES = ("cal_margin", "auto_converge", "xbzrle")
PREDICTED_COLUMNS = (
    "total_time_s",
    "downtime_ms",
    "transferred_mib",
    "converges",
    "converge_probability",
    "downtime_within_limit",
)


def calibration_loss(X: pd.DataFrame, y: pd.DataFrame, cal: Calibration) -> float:
    """Mean absolute log error of the calibrated time; an aborted migration predicted to finish before
    its abort costs log(abort / predicted), one predicted not to finish costs nothing."""
    out = analytic_frame(X, cal)
    predicted = out["total_time_s"].to_numpy(float)
    measured = y["total_time_s"].to_numpy(float)
    done = y["converged"].to_numpy(bool)
    err = np.where(
        done,
        np.abs(np.log(measured / predicted)),
        np.where(out["converges"].to_numpy(bool), np.maximum(0.0, np.log(measured / predicted)), 0.0),
    )
    return float(np.mean(err))


def calibrate(X: pd.DataFrame, y: pd.DataFrame, passes: int = 2) -> Calibration:
    """The machine's constants, fitted in stages on the migrations each one shows in (see the module);
    a second pass refits the time constants with the switch-over rate the first one found."""
    ac, xb = X["auto_converge"].to_numpy(bool), X["xbzrle"].to_numpy(bool)
    done = y["converged"].to_numpy(bool)

    def downtime_loss(Xs: pd.DataFrame, ys: pd.DataFrame, c: Calibration) -> float:
        out = analytic_frame(Xs, c)["downtime_ms"].to_numpy()
        measured = ys["downtime_ms"].to_numpy(float)
        return float(np.mean(np.abs(np.log((measured + 10) / (out + 10)))))

    def fit(
        base: Calibration,
        rows: np.ndarray,
        start: list[float],
        make: Callable[[Calibration, np.ndarray], Calibration],
        loss: Callable[[pd.DataFrame, pd.DataFrame, Calibration], float] = calibration_loss,
    ) -> Calibration:
        if rows.sum() < MIN_CALIBRATION_ROWS:
            return base
        Xs, ys = X[rows], y[rows]
        best = minimize(
            lambda theta: loss(Xs, ys, make(base, theta)),
            np.array(start),
            method="Nelder-Mead",
            options={"xatol": 1e-3, "fatol": 1e-5, "maxiter": 400},
        )
        return make(base, best.x)

    cal = Calibration(overhead_s=1.0, base_mib=40.0, base_share=0.05, xbzrle_cold_round=True, midround=True)
    for _ in range(passes):
        cal = fit(
            cal,
            ~ac & ~xb,
            [cal.overhead_s, cal.base_mib, cal.base_share],
            lambda c, t: replace(
                c,
                overhead_s=float(abs(t[0])),
                base_mib=float(abs(t[1])),
                base_share=float(min(abs(t[2]), 1.0)),
            ),
        )
        # log-space for the rest: shares and rates over orders of magnitude
        cal = fit(
            cal,
            ac,
            [np.log(min(cal.dirty_cpu_share, 0.5))],  # off the clamp at 1, or the simplex sees no slope
            lambda c, t: replace(c, dirty_cpu_share=float(np.exp(min(t[0], 0.0)))),
        )
        cal = fit(
            cal,
            xb,
            [np.log(cal.xbzrle_ratio), np.log(min(cal.xbzrle_mibps, 1e4))],
            lambda c, t: replace(
                c, xbzrle_ratio=float(np.exp(min(t[0], 0.0))), xbzrle_mibps=float(np.exp(t[1]))
            ),
        )
        cal = fit(
            cal,
            done,
            [np.log(cal.switchover_mibps or 300.0), np.log(max(cal.downtime_overhead_ms, 20.0))],
            lambda c, t: replace(
                c, switchover_mibps=float(np.exp(t[0])), downtime_overhead_ms=float(np.exp(t[1]))
            ),
            downtime_loss,
        )
    return cal


def check_inputs(X: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in INPUT_COLUMNS if c not in X.columns]
    if missing:
        raise InputError(f"migration model: missing input column(s) {', '.join(missing)}")
    return X[list(INPUT_COLUMNS)]


class MigrationCorrection(BaseEstimator):
    """Analytic pre-copy figures, calibrated and corrected by gradient boosting; see the module docstring."""

    def __init__(
        self,
        max_iter: int = 200,
        learning_rate: float = 0.05,
        max_depth: int = 2,
        min_samples_leaf: int = 5,
        l2_regularization: float = 1.0,
        random_state: int = 0,
    ) -> None:
        self.max_iter = max_iter
        self.learning_rate = learning_rate
        self.max_depth = max_depth
        self.min_samples_leaf = min_samples_leaf
        self.l2_regularization = l2_regularization
        self.random_state = random_state

    def _gbm(self) -> HistGradientBoostingRegressor:
        return HistGradientBoostingRegressor(
            max_iter=self.max_iter,
            learning_rate=self.learning_rate,
            max_depth=self.max_depth,
            min_samples_leaf=self.min_samples_leaf,
            l2_regularization=self.l2_regularization,
            random_state=self.random_state,
        )

    def _features(self, X: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Model inputs (scale-free ratios and logs of the inputs, the plain and the calibrated analytic
        figures) and the calibrated figures themselves."""
        an = analytic_frame(X)
        cal = analytic_frame(X, self.calibration_)
        mem, ws = X["mem_mib"].to_numpy(float), X["working_set_mib"].to_numpy(float)
        dirty, bw = X["dirty_mibps"].to_numpy(float), X["bandwidth_mibps"].to_numpy(float)
        downtime = X["max_downtime_ms"].to_numpy(float)
        F = pd.DataFrame(
            {
                "log_mem": np.log(mem),
                "ws_share": ws / mem,
                "log_dirty": np.log1p(dirty),
                "log_bandwidth": np.log(bw),
                "log_downtime": np.log(downtime),
                "auto_converge": X["auto_converge"].to_numpy(float),
                "xbzrle": X["xbzrle"].to_numpy(float),
                "dirty_over_bw": dirty / bw,
                "budget_over_ws": bw * downtime / 1000.0 / ws,
                "an_log_time": np.log(an["total_time_s"].to_numpy(float)),
                "an_converges": an["converges"].to_numpy(float),
                "cal_log_time": np.log(cal["total_time_s"].to_numpy(float)),
                "cal_converges": cal["converges"].to_numpy(float),
                "cal_log_mib": np.log(cal["transferred_mib"].to_numpy(float)),
                "cal_iterations": cal["iterations"].to_numpy(float),
                # > 0: predicted to finish before the abort; a non-converging run's forced time is later
                "cal_margin": np.log(abort_deadline_s(mem, bw) / cal["total_time_s"].to_numpy(float)),
            },
            index=X.index,
        )
        return F[list(FEATURES)], cal

    def fit(self, X: pd.DataFrame, y: pd.DataFrame) -> MigrationCorrection:
        # Hundreds of rows: OpenMP threads only spin (30 s instead of 2 on a busy 2-core machine).
        with threadpool_limits(1, user_api="openmp"):
            return self._fit(check_inputs(X), y)

    def _fit(self, X: pd.DataFrame, y: pd.DataFrame) -> MigrationCorrection:
        done = y["converged"].to_numpy(bool)
        if done.sum() < 2 * self.min_samples_leaf:
            raise InputError(f"migration model: {done.sum()} converged migrations are too few to learn from")
        self.calibration_ = calibrate(X, y)
        F, cal = self._features(X)
        self.mib_ = self._gbm().fit(
            F[done],
            np.log(y["transferred_mib"].to_numpy(float)[done] / cal["transferred_mib"].to_numpy()[done]),
        )
        self.all_converged_ = bool(done.all())
        if not self.all_converged_:
            self.converges_ = LogisticRegression(C=10.0).fit(F[list(CONVERGE_FEATURES)], done)
        self.n_train_ = len(X)
        return self

    def predict(self, X: pd.DataFrame) -> pd.DataFrame:
        """One row per input: PREDICTED_COLUMNS."""
        with threadpool_limits(1, user_api="openmp"):
            return self._predict(check_inputs(X))

    def _predict(self, X: pd.DataFrame) -> pd.DataFrame:
        F, cal = self._features(X)
        if self.all_converged_:
            p = np.ones(len(X))
        else:
            proba = self.converges_.predict_proba(F[list(CONVERGE_FEATURES)])
            p = proba[:, list(self.converges_.classes_).index(True)]
        downtime = cal["downtime_ms"].to_numpy()
        converges = p >= 0.5
        return pd.DataFrame(
            {
                "total_time_s": cal["total_time_s"].to_numpy(),
                "downtime_ms": downtime,
                "transferred_mib": cal["transferred_mib"].to_numpy() * np.exp(self.mib_.predict(F)),
                "converges": converges,
                "converge_probability": p,
                "downtime_within_limit": converges & (downtime <= X["max_downtime_ms"].to_numpy(float)),
            },
            index=X.index,
        )
