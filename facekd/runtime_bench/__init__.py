"""Benchmark stage: run every exported artifact on every reachable target, measure accuracy and
latency, write one result JSON per device run and a report that merges any number of them.

Kept import-light on purpose: the worker (``python -m facekd.runtime_bench.worker``) runs in other Python
environments and on remote hosts, where only the standard library and numpy can be assumed.
"""
