"""The package version (one home: the CLI's --version and the User-Agent of URL downloads read it)."""

__version__ = "0.1.0"
