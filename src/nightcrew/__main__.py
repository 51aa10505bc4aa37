"""``python -m nightcrew``: the same CLI as the ``nightcrew`` console script."""

from nightcrew.cli import main

if __name__ == "__main__":
    main()
