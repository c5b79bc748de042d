"""Models: the built-in zoo's names and the user's own model code, framework-neutral.

``--model`` names a built-in architecture (:data:`ZOO`, built by each framework
package's ``zoo`` module with the same parameter count in both frameworks) or
the user's code: a Python file defining ``build_torch(spec, **options)`` and/or
``build_tensorflow(spec, **options)``, or ``module:function`` naming one
builder that is also told the framework (``framework=...``). A file's source
travels inside the :class:`~components.frameworks.base.ModelSpec` (so every
step, here or in a pod, builds exactly the code the run started with, checked
by its digest); a module must be importable wherever the steps run.
"""
