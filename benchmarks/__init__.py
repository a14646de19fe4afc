"""Benchmarks whose figures the README quotes; each runs with one command (see README.md here).

The package is also a Django app, used only by benchmarks/settings.py: it installs the probe that
tells the recording benchmark exactly when the worker has finished every task (apps.py).
"""
