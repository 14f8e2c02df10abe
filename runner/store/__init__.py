"""Results on disk and the data tables read from them: results folders (atomic writes, metadata),
provenance stamps and strict JSON, the run-counting rule, the cell table.
"""
