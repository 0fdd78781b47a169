"""Reports read only RunResult: console (the seed's layout), CSV, JSON."""
