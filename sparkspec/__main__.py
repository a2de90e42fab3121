from sparkspec.cli import main

main()
