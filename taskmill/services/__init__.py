"""Background services that run inside workers: recovery, pruning, the periodic scheduler."""
