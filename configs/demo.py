"""Small and fast: the embedded synthetic THUMOS14-shaped dataset, end to end in a few minutes on a CPU.

  stpn demo --workdir=work/demo
  stpn demo --workdir=work/demo --config=configs/demo.py --config.train.steps=300

Same keys as configs/thumos14.py; only sizes and the learning rate differ.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import thumos14  # noqa: E402  (configs are plain files; share the defaults instead of copying them)


def get_config():
    config = thumos14.get_config()
    config.dataset.dir = ""  # the demo writes its dataset into <workdir>/dataset
    config.model.attention_units = 64
    config.train.batch_size = 6
    config.train.learning_rate = 1e-3
    config.train.steps = 8000
    config.train.steps_per_epoch = 1000
    config.synthetic.feature_dim = 32
    config.synthetic.num_shards = 2
    return config
