"""Files shipped with stpn_tf (package data: installed as `stpn_tf.shipped`).

`thumos14/` holds real THUMOS14 annotation files in three common layouts (see its README.md). Any file or
folder flag of the `stpn` command names them as `stpn:<path inside this folder>`, from any directory and
from an installed wheel; `stpn_tf.core.resources` resolves those paths with `importlib.resources`.
"""
