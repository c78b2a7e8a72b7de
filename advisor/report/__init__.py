"""Reports for capacity planners and operators: a self-contained HTML page per plan."""

from advisor.report.html import render_report, write_report

__all__ = ["render_report", "write_report"]
