import sys

from sf_activation.cli import main

sys.exit(main())
