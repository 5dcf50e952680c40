"""`python -m study` runs the command line, like the `study` console script."""
import sys

from study.cli import main

sys.exit(main())
