"""Selection: the CCFS algorithm (`ccfs.py`) and the baselines (`baselines.py`) as pure
tensor functions, and the select stage (`run.py`). The table of methods that wraps them
is `ccfs.selection.methods`."""
