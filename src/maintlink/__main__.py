from maintlink.cli import main

main()
