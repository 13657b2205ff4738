"""One module per device kind (scanner, card reader, printer, display), the same shape each."""

# Before any module here imports python-escpos: its capabilities cache in one fixed folder,
# not a new temporary folder at every import (``drivers.escpos_cache``).
from drivers import escpos_cache as _escpos_cache  # noqa: F401
