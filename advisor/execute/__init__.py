"""Applying plans: the dry run (dryrun.py) and the live libvirt executor (live.py: preflight, migrate, cold,
resume, all recorded in journal.py). The live side is imported where used: it needs libvirt-python."""

from advisor.execute.dryrun import DryRunResult, dry_run

__all__ = ["DryRunResult", "dry_run"]
