"""Shared test settings (quiet TensorFlow; the CI machine has 2 cores) and the fixtures several files share.

Builders that take arguments live in tests/helpers/; fixtures here build the read-only inputs that cost
seconds, once per test process (with `pytest -n 2 --dist loadfile` each worker builds its own).
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from tests.helpers.xla import with_fast_compile  # noqa: E402

# XLA compiles quickly (the LLVM backend at -O0, ...) in every test process and the processes they start
# (tests/helpers/xla.py).
os.environ["XLA_FLAGS"] = with_fast_compile(os.environ.get("XLA_FLAGS", ""))

import pytest  # noqa: E402

from stpn_tf.core import resources  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = resources.resource_path(resources.THUMOS14)


# The files that take longest, slowest first (measured with --durations on the 2-core machine). `make test`
# runs `pytest -n 2 --dist loadfile --no-loadscope-reorder`: the two processes take whole files in collection
# order, so running these first (longest processing time first) keeps one slow file from starting last and
# bounding the wall time while the other process idles. Files not listed follow in their usual order.
SLOWEST_FIRST = ("test_cli.py", "test_localize.py", "test_export.py", "test_beam_multiprocess.py", "test_faults.py",
                 "test_beam.py", "test_demo.py", "test_localize_options.py", "test_extract.py", "test_i3d.py",
                 "test_multi_worker.py", "test_serving_bounds.py", "test_study.py", "test_build_dataset.py",
                 "test_train.py", "test_sweep.py", "test_api.py", "test_predict.py", "test_tfrecord.py")


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(SLOWEST_FIRST)}
    # A stable sort: tests keep their order within a file (module fixtures and order-dependent tests rely on it).
    items.sort(key=lambda item: rank.get(item.path.name, len(SLOWEST_FIRST)))


@pytest.fixture(scope="session")
def repo_dir():
    return REPO


@pytest.fixture(scope="session")
def thumos_dir():
    return DATA


@pytest.fixture(scope="session")
def synthetic_dataset(tmp_path_factory) -> str:
    """The synthetic THUMOS14-shaped dataset directory (D = 8, at most 24 snippets a video, one shard a split:
    200 train and 212 test videos, 20 classes). Read-only: tests write their outputs elsewhere."""
    from stpn_tf.data import synthetic

    path = str(tmp_path_factory.mktemp("synthetic") / "data")
    synthetic.write_dataset(path, feature_dim=8, max_snippets=24, num_shards=1)
    return path


@pytest.fixture(scope="session")
def small_workdir(tmp_path_factory) -> str:
    """A work directory of random models (tests.helpers.workdir: SMALL_CLASSES, SMALL_D). Read-only."""
    from tests.helpers.workdir import SMALL_CLASSES, SMALL_D, write_random_workdir

    return write_random_workdir(str(tmp_path_factory.mktemp("small_workdir")), SMALL_CLASSES, SMALL_D)


@pytest.fixture(scope="session")
def small_export(small_workdir, tmp_path_factory) -> str:
    """`small_workdir` exported on the grid of SMALL_GRID_LENGTH with `SMALL_SETTINGS` and the XLA-compiled
    localization of production: the export test_export.py, test_beam.py, test_beam_multiprocess.py and
    test_faults.py read (one export per test process instead of one per file; each costs seconds). Read-only."""
    from stpn_tf.data.grid import GridConfig
    from stpn_tf.inference.export import run_export
    from tests.helpers.workdir import SMALL_GRID_LENGTH, SMALL_SETTINGS

    parent = tmp_path_factory.mktemp("small_export")
    assert run_export(workdir=small_workdir, out=str(parent / "export"), grid=GridConfig(length=SMALL_GRID_LENGTH),
                      localizer_config=SMALL_SETTINGS) == 0
    assert os.listdir(parent) == ["export"]  # no temporaries left
    return str(parent / "export")
