import sys

from nunet.cli.main import main

sys.exit(main())
