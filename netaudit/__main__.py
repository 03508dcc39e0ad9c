from netaudit.cli import main

main()
