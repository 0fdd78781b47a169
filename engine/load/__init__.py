"""The load: scenarios (what is sent), executors (how many VUs, when), and
drive (one process's load on a pool of connections, ticking once a second)."""
