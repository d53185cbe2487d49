"""The lowest floor: the one user-facing error, the limits every flag and file is checked against, and
what the process learns from its environment (torchrun's process count, the CPU's name)."""
