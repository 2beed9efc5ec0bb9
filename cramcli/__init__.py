"""cram: pretrain a crammed BERT on a fixed compute budget and measure it on GLUE."""

__version__ = "0.1.0"
