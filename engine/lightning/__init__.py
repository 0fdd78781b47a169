"""Lightning mode: a Lightning node as the target, over Erlang distribution.

mode.py (open_target, the observers, cleanup) -> session.py (the node, the
collector, memory) -> setup.py (user, project, channel on either API) and
timing.py (the collector's buckets as server timing).
"""
