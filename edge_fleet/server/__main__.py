from edge_fleet.server.app import main

main()
