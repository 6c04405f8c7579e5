"""Bucketing: the one rule that rounds a size up to one of a few sizes, so compiled code sees few shapes.

A compiled function (XLA, or a traced `tf.function`) is built once per input shape. Padding a size up
to the next bucket (the next power of two, or a finer grid of steps between two powers of two) bounds
the number of distinct shapes by the logarithm of the largest size, at the cost of at most 2x (or
1 + 1 / steps x) padding. Users: the Localizer's derived bounds (classes, rows, component slots), the
time axis of batched features (`stpn_tf.inference`), and that axis inside the export's graph, which looks
the buckets up in a table (`buckets_up_to`) because it cannot call Python.

Pure Python, no TensorFlow.
"""

from __future__ import annotations


def bucket(needed: int, smallest: int = 1, steps: int = 1) -> int:
    """The smallest bucket >= `needed`.

    The buckets are smallest * 2^n * (1 + i / steps) for n >= 0 and i = 0 .. steps - 1, each rounded down
    to an integer (base + base * i // steps). steps 1 gives the powers of two times `smallest`.

    Examples: bucket(5) = 8, bucket(8) = 8, bucket(0) = 1; bucket(3, 4) = 4, bucket(9, 4) = 16;
    bucket(17, 16, steps=4) = 20 (the buckets 16, 20, 24, 28, 32, 40, ...).

    Args:
      needed: The size to hold (anything <= smallest gives `smallest`).
      smallest: The first bucket, >= 1.
      steps: Buckets per doubling, >= 1.

    Returns:
      The bucket, an int >= max(needed, smallest).
    """
    if smallest < 1 or steps < 1:
        raise ValueError(f"bucket: smallest and steps must be >= 1, got {smallest} and {steps}")
    base = int(smallest)
    while True:
        for i in range(steps):
            size = base + base * i // steps
            if size >= needed:
                return size
        base *= 2


def next_power_of_two(n: int) -> int:
    """The smallest power of two >= n (1 for n <= 1): bucket(n) with the default buckets."""
    return bucket(n)


def buckets_up_to(limit: int, smallest: int = 1, steps: int = 1) -> list[int]:
    """Every distinct bucket <= `limit` in ascending order, so that `bucket(n, smallest, steps)` is the
    first entry >= n for any n <= limit (the lookup table of a graph that cannot call `bucket`).

    Example: buckets_up_to(40) = [1, 2, 4, 8, 16, 32].
    """
    sizes: list[int] = []
    size = bucket(0, smallest, steps)
    while size <= limit:
        sizes.append(size)
        size = bucket(size + 1, smallest, steps)
    return sizes
