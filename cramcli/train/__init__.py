"""Training parts of `cram pretrain`: schedules, masking, optimizer groups, budget clock, checkpoints, metrics."""
