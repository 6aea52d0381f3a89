import sys

from esper.kernels.cli import main

sys.exit(main())
