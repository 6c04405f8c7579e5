"""Serving: the composed inference graph (model streams -> grid -> Localizer), its export, and one
ServingModel interface over an export or a training work directory, used by `stpn localize`, `stpn
localize VIDEO`, Beam and the demo."""
