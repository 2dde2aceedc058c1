"""Fakes and builders shipped with the code (not mocks), for the project's tests and benchmarks.

- fake_cluster.py  FakeCluster: an in-memory Xinference (the contract suite runs against it too)
- simulator.py     apply_plan: the observed state after a plan was carried out perfectly
- builders.py      gpu_worker and other small value builders
"""
