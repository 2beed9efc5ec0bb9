"""What only `cram demo` uses: synthetic downstream tasks built from the embedded corpus' world (`tasks.py`).

Imports run one way: cramcli/stages/demo.py → cramcli/demo → cramcli/data/embedded.py (the corpus itself is a
data source of prepare-data and train-tokenizer, so it stays in data/).
"""
