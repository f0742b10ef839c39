"""Reports: a pandas model of the results store and run manifests, rendered to a static site."""

from reports.model import ReportData, build_report, latency_pivot, summary_table
from reports.render import render_site

__all__ = ["ReportData", "build_report", "latency_pivot", "render_site", "summary_table"]
