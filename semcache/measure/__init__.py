"""Offline measurement: labelled pairs, threshold calibration, tuning, replays, the demo stream,
retrieval evaluation and plots. Nothing on the request path imports from here."""
