"""``python -m conv1x1_cli`` runs the ``conv1x1`` command."""

from .cli import run

if __name__ == "__main__":
    run()
