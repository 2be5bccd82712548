"""`python -m tunegate.cli`, as the `tunegate` console script."""

from tunegate.cli import main

main()
