"""What only `cram demo` uses: synthetic downstream tasks built from the embedded corpus' world (`tasks.py`),
running its stages in one folder (`steps.py`), its verdict and report (`report.py`).

Imports run one way: cramcli/stages/demo.py → cramcli/demo → cramcli/data/embedded.py (the corpus itself is a
data source of prepare-data and train-tokenizer, so it stays in data/).
"""
