"""Small and fast: the embedded synthetic THUMOS14-shaped dataset, end to end in a few minutes on a CPU.

  stpn demo --workdir=work/demo
  stpn demo --workdir=work/demo2 --config.train.steps=300

Same keys as thumos14.py; only sizes and the learning rate differ.
"""

from stpn_tf.configs import thumos14  # share the defaults instead of copying them


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
