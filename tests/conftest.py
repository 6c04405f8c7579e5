"""Shared test settings: quiet TensorFlow, tiny thread pools (the CI machine has 2 cores)."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pytest  # noqa: E402

from stpn_tf.core import resources  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = resources.resource_path(resources.THUMOS14)


@pytest.fixture(scope="session")
def repo_dir():
    return REPO


@pytest.fixture(scope="session")
def thumos_dir():
    return DATA
