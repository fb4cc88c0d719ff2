import sys

from aptmesh_cli.main import main

sys.exit(main())
