"""chansink: the mock downstream service a channel proxy forwards to."""
