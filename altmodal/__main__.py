"""``python -m altmodal`` (and ``torchrun -m altmodal``) run the command line."""

import sys

from altmodal.cli import main

sys.exit(main())
