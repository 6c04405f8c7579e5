"""Files shipped with stpn_tf (package data: installed as `stpn_tf.shipped`).

`thumos14/` holds real THUMOS14 annotation files in three common layouts (see its README.md);
`kinetics400/label_map.txt` the Kinetics-400 class names of the I3D classifier. Any file or
folder flag of the `stpn` command names them as `stpn:<path inside this folder>`, from any directory and
from an installed wheel; `stpn_tf.core.resources` resolves those paths with `importlib.resources`.
"""
