"""Loads the shared test kit: the fixtures live in ``riskwatch_common.pytest_plugin``."""

pytest_plugins = ("riskwatch_common.pytest_plugin",)
