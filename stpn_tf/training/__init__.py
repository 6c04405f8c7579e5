"""Training one stream: strategy, callbacks, the fit loop and the multi-worker loop."""
