"""Test tooling shared by the tests and the kill harness: IDX dataset files, a TensorBoard
event reader, and the SIGKILL harness (also a script: python3 tests/tools/kill_harness.py)."""
