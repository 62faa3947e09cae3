"""Built-in backends: one package per provider, plus the local runtime they share.

Nothing here is imported by `import mediagen`; the registry imports a provider's package the first
time a model string names it.
"""
