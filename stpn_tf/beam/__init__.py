"""Apache Beam pipelines (optional `beam` extra): extraction + TFRecord building, batch localization."""
