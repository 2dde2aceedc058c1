"""xinference-reconciler: keeps an Xinference cluster matching a version-controlled config file.

``daemon.core`` is the pure functional core (config model, estimator, drift, admission, plan);
``daemon.adapters`` and ``daemon.cli`` are the imperative shell around it.
"""

__version__ = "0.1.0"
