from edge_fleet.device.agent import main

main()
