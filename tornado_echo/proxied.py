"""Deprecated: this module is now `tornado_echo.proxy_protocol`.

Its names still work from here, each with a `DeprecationWarning` when it
is used, and are the same objects as there.

.. deprecated:: 0.3.0
   Import from `tornado_echo.proxy_protocol` (the PROXY protocol settings and the socket-level header reader).
"""

from tornado_echo._moved import moved_to

__getattr__ = moved_to("tornado_echo.proxied", "tornado_echo.proxy_protocol")
