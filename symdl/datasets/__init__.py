"""Small datasets bundled with symdl for offline examples and tests."""

from . import digits

__all__ = ["digits"]
