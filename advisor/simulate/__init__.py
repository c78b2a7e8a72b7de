"""Replay simulator: a policy decides migrations step by step on a recorded trace; energy and SLA counted."""
