import sys

from aptmesh.cli import main

sys.exit(main())
