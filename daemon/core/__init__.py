"""The pure core: frozen values and functions with no I/O, clock, logging or environment access."""
