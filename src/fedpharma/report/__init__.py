"""The run report: one self-contained HTML page per run directory.

Importing this package is cheap; matplotlib and jinja2 load only when a report is rendered.
"""

from fedpharma.report.html import render_report

__all__ = ["render_report"]
