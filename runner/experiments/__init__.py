"""Experiments: typed specs in, data out (sweep, validate, gate, bench, load, floor, capacity,
calibration, conform). They run the model (``sim``) and the real world (:mod:`runner.world`) and
write through :mod:`runner.store`; they never render a report.
"""
