class StpnError(ValueError):
    """A user-facing input error; the CLI prints its message on one line and exits 2."""


class WriteError(StpnError):
    """An output could not be written (disk full, file-size limit, quota); the previous output is kept.

    Long jobs stop at the first one instead of going on to fail for every remaining item.
    """
