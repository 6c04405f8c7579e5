"""stpn_tf.core.buckets: the one rule that rounds sizes up to a few compiled shapes (numbers by hand)."""

import pytest

from stpn_tf.core.buckets import bucket, buckets_up_to, next_power_of_two


def test_powers_of_two_by_hand():
    # 0 and 1 fit in 1; 5 needs 8; a power of two is its own bucket.
    assert [next_power_of_two(n) for n in (-3, 0, 1, 2, 3, 4, 5, 8, 9, 17, 400, 1024, 1025)] == [
        1, 1, 1, 2, 4, 4, 8, 8, 16, 32, 512, 1024, 2048]
    # The bit trick it replaces gives the same answer everywhere.
    assert all(next_power_of_two(n) == 1 << max(0, n - 1).bit_length() for n in range(-5, 5000))


def test_smallest_and_steps_by_hand():
    # Classes per video: 4, 8, 16, ...
    assert [bucket(n, 4) for n in (0, 3, 4, 5, 9, 20)] == [4, 4, 4, 8, 16, 32]
    # Component slots: 8, 16, 32, ...
    assert [bucket(n, 8) for n in (1, 8, 9, 33)] == [8, 8, 16, 64]
    # Rows: four steps per doubling from 16: 16, 20, 24, 28, 32, 40, 48, 56, 64, 80, ...
    assert [bucket(n, 16, steps=4) for n in (1, 16, 17, 21, 29, 33, 57, 65)] == [16, 16, 20, 24, 32, 40, 64, 80]


def test_table_matches_the_rule():
    assert buckets_up_to(40) == [1, 2, 4, 8, 16, 32]
    assert buckets_up_to(70, 16, steps=4) == [16, 20, 24, 28, 32, 40, 48, 56, 64]
    assert buckets_up_to(0) == []
    # The first table entry >= n is bucket(n) (the lookup the export graph does).
    table = buckets_up_to(1 << 12, 3, steps=3)
    for n in range(0, 1 << 12):
        expected = bucket(n, 3, steps=3)
        if expected <= table[-1]:
            assert min(size for size in table if size >= n) == expected


def test_bad_arguments():
    with pytest.raises(ValueError, match="smallest"):
        bucket(5, 0)
    with pytest.raises(ValueError, match="steps"):
        bucket(5, 1, steps=0)
