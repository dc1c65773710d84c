"""`asanlab soak`: load sent in checkpoints (load.py) while each process's memory, descriptors and
PHP heap are sampled (driver.py, memory.py, resources.py), judged by growth (growth.py) and
reported (report.py, plot.py)."""
