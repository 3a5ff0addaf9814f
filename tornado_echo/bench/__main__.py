"""``python -m tornado_echo.bench``; see `tornado_echo.bench.cli`."""

import sys

from tornado_echo.bench.cli import main

sys.exit(main())
