"""`scdrugmap serve`: an HTTP API over one store and the web page that uses it.

A bench scientist uploads cells, picks a kept predictor and gets per-cell
calls with pictures; an analyst lists what the store holds and asks it SQL.
Everything a request names (a job, a predictor, a figure) is looked up among
known names, never turned into a path, so no request reaches a file outside
the store.
"""
