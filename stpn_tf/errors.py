class StpnError(ValueError):
    """A user-facing input error; the CLI prints its message on one line and exits 2."""
