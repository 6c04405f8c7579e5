"""`python -m stpn_tf.cli`: the `stpn` command."""

from stpn_tf.cli import run

run()
