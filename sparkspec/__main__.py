from sparkspec.cli import run

run()
