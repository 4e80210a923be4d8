from raftmem.cli import main

main()
