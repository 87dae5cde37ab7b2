"""The load harness: ``python -m bench SCENARIO`` measures the gateway beside a naive baseline.

See ``bench/README.md`` for the scenarios and what each figure means.
"""
