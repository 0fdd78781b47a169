"""Measurement: the Recorder (metrics), the one result model (result), exact
merging (merge), comparison (compare), saturation steps (saturation), thresholds,
statuses, server-side timing and units."""
