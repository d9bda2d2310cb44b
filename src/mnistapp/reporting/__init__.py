"""Reporting: run records (``metrics.json``, the result table), figures and sweep summaries.

Nothing here trains; everything reads what a run left behind or draws it.
"""
