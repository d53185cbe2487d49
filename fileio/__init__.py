"""The lowest floor: writing files so that a kill never leaves half of one (atomic.py)."""
