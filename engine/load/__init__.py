"""The load, described: scenarios (what is sent) and executors (how many VUs,
and when). No network here: engine/drive.py puts an executor to work."""
