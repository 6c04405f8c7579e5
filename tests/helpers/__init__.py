"""Builders shared by the test files (one home each; test files never import each other).

- cli: `stpn` in this process (fast) or in a process of its own (exit codes, stderr, signals), SMALL
- releases: tiny feature releases in each real layout (BaS-Net, W-TALC, toolkit + extract, ActivityNet)
- tiny_dataset: the hand-made 12-video TFRecord dataset the training tests learn from
- workdir: a training work directory of random STPN models; the small work directory and export's settings
  (the fixtures small_workdir and small_export in tests/conftest.py)
- raw: random raw model outputs (what `stpn localize --save_raw` writes)
- video: synthetic frames and lossless video files
- reference_evaluation: the plain-loop evaluation reference (also timed by bench/evaluate.py)
- xla: the tests' fast-compile XLA flags and a process environment with the default flags
"""
