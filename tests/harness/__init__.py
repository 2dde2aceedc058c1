"""Test harness: a real Xinference 4.1.0 server (CPU only) on loopback, with tiny local models."""
