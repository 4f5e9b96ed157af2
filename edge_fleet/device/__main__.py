from edge_fleet.device.command import main

main()
