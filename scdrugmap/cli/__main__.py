"""`python -m scdrugmap.cli`, as the tests and benchmarks run it."""

from scdrugmap.cli import main

if __name__ == "__main__":
    main()
