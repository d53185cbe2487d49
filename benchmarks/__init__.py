"""The benchmarks: each module measures one thing and writes its report (.md) and results (.json) here.

Run one from the repository root as ``python3 -m benchmarks.<name>`` (``--help`` for its flags). What they
share (running configurations, summarising seeds, writing the reports) is in benchmarks/scaffold.py; the
speed benchmarks' three ways of feeding a model are in benchmarks/baselines.py.
"""
