"""Prefect tasks: thin wrappers around audioclf_core, one per observable unit of I/O.

Tasks take and return small things (URIs, parameter models, summaries),
never arrays, models, DataFrames or filesystem clients.
"""
