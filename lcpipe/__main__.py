from lcpipe.cli import main

main()
