"""Network definitions: torch only, no I/O. Constructor defaults match the shipped weights."""
