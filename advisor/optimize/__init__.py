"""Placement planning: bounds, heuristics, CP-SAT and the wave sequencer, cluster by cluster."""

from advisor.optimize.fleet import plan_fleet
from advisor.optimize.plan import plan_cluster

__all__ = ["plan_cluster", "plan_fleet"]
