"""Publishing a checkpoint: its model card (`card.py` the text, `recorded.py` what it is made from, `write.py`
writing it) and the hub upload's error handling (`hub.py`; the upload itself is cramcli/stages/push.py)."""
