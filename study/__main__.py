"""`python -m study` runs the command line, like the `study` console script."""
import os
import sys

# `python -m` puts the working folder first on sys.path. Outside the project's own checkout, a folder there named
# like one of its packages (a user's `data/` beside their study files) would shadow it as a namespace package.
if sys.path and os.path.abspath(sys.path[0] or os.curdir) == os.getcwd() \
        and not os.path.isfile(os.path.join(os.getcwd(), "study", "__main__.py")):
    del sys.path[0]

from study.cli import main  # noqa: E402

sys.exit(main())
