import sys

from aptmesh_apt_method.main import main

sys.exit(main())
