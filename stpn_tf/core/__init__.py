"""The bottom layer: one-line errors, atomic writes, shipped files, the one mAP table format."""
