"""scorer: predict a product review's star rating from its text, at scale."""

from pathlib import Path as _Path

__version__ = "0.1.0"

# The exporter lives in the top-level folder export/ and installs as scorer.export (see
# pyproject.toml). Run from a source checkout without an install (a device host with no
# network, say), the import system would not find it under scorer/; this points it there.
_SOURCE_ROOT = _Path(__file__).resolve().parent.parent
if (_SOURCE_ROOT / "export" / "__init__.py").is_file():
    __path__.append(str(_SOURCE_ROOT))
