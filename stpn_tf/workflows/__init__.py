"""Whole jobs built from the packages below: demo, tune, study, report, localizing videos, plots."""
