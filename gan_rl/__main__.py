"""``python -m gan_rl`` is the ``gan-rl`` command."""

from gan_rl.cli.main import main

if __name__ == "__main__":
    main()
