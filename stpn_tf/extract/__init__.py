"""Raw video -> two-stream I3D snippet features (decode, TV-L1 flow, I3D via tensorflow_hub)."""
