"""Applying plans: the dry run (and, later, the libvirt executor)."""

from advisor.execute.dryrun import DryRunResult, dry_run

__all__ = ["DryRunResult", "dry_run"]
