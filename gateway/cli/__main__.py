"""`python -m gateway.cli`: the `audiosplit` command."""

import sys

from gateway.cli import main

sys.exit(main())
