"""Training one stream: strategy, callbacks, the fit (trainer), the multi-worker loop, and keras_compat (the
one home of private Keras/TF internals)."""
