import sys

from tornado_echo.cli import main

sys.exit(main())
