"""Jobs that chain the stages: the nightly consolidation run (and, later, retraining)."""
