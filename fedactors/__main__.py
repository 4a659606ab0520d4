import sys

from fedactors.cli import main

sys.exit(main())
