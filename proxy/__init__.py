"""chanproxy: a small reference channel proxy (Lightning's /channels/:id/*path)."""
