"""Placement planning: bounds, heuristics, CP-SAT and the wave sequencer."""

from advisor.optimize.plan import plan_cluster

__all__ = ["plan_cluster"]
