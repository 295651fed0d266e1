# The one place the version is written: pyproject.toml reads it (dynamic), stattn re-exports it as
# stattn.__version__, and CHANGELOG.md says what each version holds.
__version__ = "0.1.0"
