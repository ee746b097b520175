"""`python -m terrasnap.controller [options]`: run the operator."""

import sys

from terrasnap.controller.run import main

sys.exit(main())
