"""The package version, in its own module so that every stage can read it without importing the facade."""
__version__ = "0.1.0"
