"""The operations a user names (ingest, embed, evaluate, benchmark, train, predict,
finetune, report, export, demo), one module each, composing the packages below.

The CLI, the service, the demo and the Python API (`scdrugmap.Store`) all call these,
so an operation behaves the same whichever door it is reached through.
"""
