"""Data pipeline: raw text sources → normalised, filtered, deduplicated, tokenized, packed token rows.

`sources` streams documents, `normalize` builds the one normaliser shared by preparation and the tokenizer,
`filters` and `dedup` drop documents, `tokenizer` trains WordPiece with fixed special-token ids, `packing`
cuts token streams into fixed rows and orders them, `prepared` reads the result.
"""
