"""twinflow step code: what runs inside each pipeline step's container.

Every step is a plain function over paths and a typed config (``core.py``) plus a
thin KFP wrapper (``component.py``) that only maps artifacts to paths.
"""

__version__ = "0.1.0"
