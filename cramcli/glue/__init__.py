"""GLUE fine-tuning: task table, TSV/parquet/hub loaders, metrics and the GLUE-sane training loop."""
