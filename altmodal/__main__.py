"""``python -m altmodal`` (and ``torchrun -m altmodal``) run the command line."""

import sys

from altmodal.console import main

sys.exit(main())
