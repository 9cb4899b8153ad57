"""python -m conformance"""

import sys

from ._cli import main

sys.exit(main())
