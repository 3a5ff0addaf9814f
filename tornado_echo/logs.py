"""Deprecated: this module is internal now (``tornado_echo._logs``).

Its names still work from here, each with a `DeprecationWarning` when it
is used, and are the same objects as there.

.. deprecated:: 0.3.0
   Use what the package exports (`tornado_echo`) and the servers' own
   methods; the module itself is not part of the API.
"""

from tornado_echo._moved import moved_to

__getattr__ = moved_to("tornado_echo.logs", "tornado_echo._logs")
