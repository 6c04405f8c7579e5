"""What lands on disk, one module per artifact: atomic writes, dataset directory, training work directory,
export directory, detection results, ground truth."""
