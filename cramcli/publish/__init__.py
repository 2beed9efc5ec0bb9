"""Publishing a checkpoint: its model card (the hub upload itself is cramcli/stages/push.py)."""
