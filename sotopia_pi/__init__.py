"""sotopia-pi: SOTOPIA and SOTOPIA-pi, reimplemented as a terminal studio."""

__version__ = "0.1.0"
