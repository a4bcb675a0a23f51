"""`python -m adam_jax`: the `adam-jax` command line (see adam_jax/cli.py)."""

from adam_jax.cli import run

if __name__ == '__main__':
    run()
