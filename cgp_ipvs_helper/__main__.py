"""`python -m cgp_ipvs_helper`: the same as the `cgp-ipvs-helper` command."""

import sys

from cgp_ipvs_helper.cli import main

sys.exit(main())
