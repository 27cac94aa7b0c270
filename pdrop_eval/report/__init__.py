"""Results spreadsheets and sweep reports rebuilt from run directories (`build_reports`)."""

from pdrop_eval.report.build import ReportPaths, build_reports

__all__ = ["ReportPaths", "build_reports"]
