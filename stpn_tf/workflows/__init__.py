"""Whole jobs built from the packages below: demo, tune, study, report, localizing videos, plots, and runs
(what they share: streams trained unless they are, a dataset split checked against the models, cached raw
outputs)."""
