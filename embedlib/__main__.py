import sys

from embedlib.cli import main

sys.exit(main())
