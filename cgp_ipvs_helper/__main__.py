"""`python -m cgp_ipvs_helper`: the same as the `cgp-ipvs-helper` command."""

import sys

from .cli import main

sys.exit(main())
