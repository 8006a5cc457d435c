"""Project errors: raised with the offending value and how to fix it; the CLI prints them without a traceback."""


class VitrineError(Exception):
    """Base class for errors caused by user input or environment, shown to users as one clear line."""


class ConfigError(VitrineError, ValueError):
    """A config key or value is wrong."""


class CatalogError(VitrineError, ValueError):
    """A catalog or judgments file cannot be used as a whole (schema errors, missing columns)."""


class RegistryError(VitrineError):
    """A model, alias or artifact cannot be found or does not match its metadata."""
