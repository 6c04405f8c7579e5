"""What lands on disk, one owner per artifact: dataset directory, training work directory, export
directory, detection results, annotations and ground truth."""
